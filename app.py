"""The Hugging Face Space (README.md's front matter names this file): the app `pagdemo app` serves, on the
checkpoints in ./checkpoints (or $PAGDEMO_CHECKPOINTS), at the address and port the Space sets
($GRADIO_SERVER_NAME, $GRADIO_SERVER_PORT). Where the `spaces` package is installed (ZeroGPU), the model runs
ask it for a GPU."""

from pagdemo.app import AppConfig, serve

if __name__ == "__main__":
    serve(AppConfig())
