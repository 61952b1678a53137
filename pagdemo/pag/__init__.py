"""The paper's maths, no I/O: input gradients of every class (`inputgrads`, fast exact ones in `fastpag`), the
PAG loss of Eq. 1-2 (`losses`), the ground-truth gradients g(x, t) (`targets`) and how well a model meets them
(`alignment`). Imports only torch and `pagdemo.models`."""
