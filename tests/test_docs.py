"""pagdemo.docs: every table in README.md and docs/ is printed from the committed records, and this fails when one
is typed by hand or disagrees with them."""
import re
from pathlib import Path

from pagdemo import cli
from pagdemo.docs import doc_files, render, typed_tables, update

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_docs_match_the_records():
    problems = update(ROOT, check=True)
    assert not problems, "\n".join(problems)
    assert {p.relative_to(ROOT).as_posix() for p in doc_files(ROOT)} >= {"README.md", "checkpoints/README.md",
                                                                          "docs/toy/README.md", "docs/robustness.md"}


def test_a_changed_number_or_a_typed_table_is_caught():
    readme = (ROOT / "README.md").read_text()
    assert render(readme, ROOT) == readme
    number = re.search(r"\| (\d+\.\d\d) \|", readme.split("<!-- generated:table1 -->")[1]).group(0)
    tampered = readme.replace(number, "| 123.45 |", 1)
    assert tampered != readme and render(tampered, ROOT) != tampered  # the record wins over the edit
    typed = readme + "\n| model | clean |\n|---|---|\n| mine | 97.0 |\n"
    assert typed_tables(typed) == ["| mine | 97.0 |"]  # the header has no number; the typed row does
    assert typed_tables("| a | b |\n|---|---|\n| no digits | here |\n") == []


def test_the_check_command_fails_in_one_line_with_the_problem(tmp_path, capsys):
    (tmp_path / "README.md").write_text("| typed | 1.0 |\n")
    (tmp_path / "checkpoints").mkdir()
    assert cli.main(["docs", "--check", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a table with numbers outside a generated block" in err[0]
