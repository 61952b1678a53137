"""maintainer.docs: every table in README.md and docs/ is printed from the committed records, and this fails
when one is typed by hand or disagrees with them."""

import re
import subprocess
import sys
from pathlib import Path

from maintainer.docs import doc_files, render, typed_tables, update

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_docs_match_the_records():
    problems = update(ROOT, check=True)
    assert not problems, "\n".join(problems)
    assert {p.relative_to(ROOT).as_posix() for p in doc_files(ROOT)} >= {
        "README.md",
        "checkpoints/README.md",
        "docs/toy/README.md",
        "docs/robustness.md",
    }


def test_a_changed_number_or_a_typed_table_is_caught():
    readme = (ROOT / "README.md").read_text()
    assert render(readme, ROOT) == readme
    number = re.search(r"\| (\d+\.\d\d) \|", readme.split("<!-- generated:table1 -->")[1]).group(0)
    tampered = readme.replace(number, "| 123.45 |", 1)
    assert tampered != readme and render(tampered, ROOT) != tampered  # the record wins over the edit
    typed = readme + "\n| model | clean |\n|---|---|\n| mine | 97.0 |\n"
    assert typed_tables(typed) == ["| mine | 97.0 |"]  # the header has no number; the typed row does
    assert typed_tables("| a | b |\n|---|---|\n| no digits | here |\n") == []


def test_the_check_command_fails_in_one_line_with_the_problem(tmp_path):
    """`python -m maintainer.docs` from the repository root, as a maintainer (and CI) runs it."""
    (tmp_path / "README.md").write_text("| typed | 1.0 |\n")
    (tmp_path / "checkpoints").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "maintainer.docs", "--check", "--root", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "a table with numbers outside a generated block" in err[0]


def test_the_coupling_probe_names_every_run_and_a_dirty_tree(tmp_path):
    """Arms appended by a later run keep their own commit and command; an uncommitted tree is said, not
    hidden."""
    from maintainer.train_tables import coupling_probe
    from pagdemo.records.files import write_json

    table = coupling_probe("coupling-probe")
    assert "not run yet" in table(tmp_path)
    arm = {
        "steps": [{"acc": 0.1, "ce": 2.3}, {"acc": 0.3, "ce": 2.9}],
        "epochs": [
            {"test_acc": 0.2, "cos_eval": 9.0, "cos_batch": 8.0},
            {"test_acc": 0.25, "cos_eval": 7.0, "cos_batch": 5.0},
        ],
        "seconds": 10.0,
    }
    write_json(
        tmp_path / "docs/diagnosis/coupling-probe.json",
        {
            "commit": "a" * 40 + "-dirty",
            "command": "first",
            "machine": "cpu",
            "torch": "2",
            "seconds": 20.0,
            "settings": {
                "width": 16,
                "images": 64,
                "epochs": 2,
                "batch_size": 32,
                "lr": 0.01,
                "lam": 0.4,
                "impl": "explicit",
                "test_images": 20,
            },
            "arms": [
                {**arm, "coupling": "batch"},
                {**arm, "coupling": "none", "commit": "b" * 40, "command": "second"},
            ],
        },
    )
    text = table(tmp_path)
    assert "| batch | 10.0 -> 30.0 | 2.90 | 20.0, 25.0 | 8.00 -> 5.00 (batch) | 9.00 -> 7.00 | 10 |" in text
    assert "`aaaaaaa` (uncommitted changes), `bbbbbbb`" in text and "`first`; `second`" in text
    assert "the same initialization" in text and "[log](diagnosis/coupling-probe.log)" in text


def test_a_fine_tuning_probe_says_where_its_arms_started(tmp_path):
    from maintainer.train_tables import coupling_probe
    from pagdemo.records.files import write_json

    arm = {
        "coupling": "eval",
        "steps": [{"acc": 0.5, "ce": 1.3}],
        "seconds": 5.0,
        "epochs": [{"test_acc": 0.4, "cos_eval": 9.0, "cos_classes": 9.5}],
    }
    write_json(
        tmp_path / "docs/diagnosis/finetune-probe.json",
        {
            "commit": "c" * 40,
            "command": "ft",
            "machine": "cpu",
            "torch": "2",
            "seconds": 9.0,
            "settings": {
                "width": 16,
                "images": 64,
                "epochs": 1,
                "batch_size": 32,
                "lr": 0.01,
                "lam": 0.4,
                "impl": "explicit",
                "test_images": 20,
                "init_epochs": 10,
                "init_lr": 0.04,
            },
            "init": {
                **arm,
                "coupling": "none",
                "epochs": [{"test_acc": 0.512, "cos_eval": 9.87, "cos_classes": 10.0}],
            },
            "arms": [arm],
        },
    )
    text = coupling_probe("finetune-probe")(tmp_path)
    assert (
        "fine-tunes one network trained by the cross-entropy alone for 10 epochs at lr 0.04 "
        "(test accuracy 51.2, cos eval 9.87)"
    ) in text
    assert "| eval | 50.0 -> 50.0 | 1.30 | 40.0 | 9.50 -> 9.50 (classes) |" in text
    assert "[log](diagnosis/finetune-probe.log)" in text
