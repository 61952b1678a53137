"""Training: the settings of a run and their checks (`config`), named recipes (`recipes`), the loop for vanilla,
PAG, RIGD and adversarial training (`loop`) and the state that lets a run resume on another machine (`state`)."""
