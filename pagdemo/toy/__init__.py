"""The paper's 2-D toy experiment (Sec. 5.1): the experiment itself (`experiment`), its statistics over seeds
(`stats`), its figure (`plot`) and a whole run written to a folder (`run`)."""
