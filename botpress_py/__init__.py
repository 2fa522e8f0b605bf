"""botpress-py: a Python chatbot server in the spirit of Botpress v12."""

__version__ = "0.1.0"
