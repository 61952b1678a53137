"""Pictures: the PAG grid of targeted attacks (`grid`), side-by-side attacks (`compare`) and the plots of
accuracy against eps and robustness against cost (`plots`)."""
