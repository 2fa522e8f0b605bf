"""The ``botpress-py messenger`` commands and ``botpress-py start --emulator``: developer tooling, never
imported by the channel at run time (only when a command line asks for it).

- commands.py: the verbs and options;
- emulator.py: ``messenger emulator`` (and ``--configure``), emulator_config.py: the bot's file it edits;
- simulate.py and chat.py: one message, or a chat, through a running server and emulator
  (conversation.py drives them over HTTP);
- one_terminal.py: ``start --emulator``, server, emulator and chat in one process (stdin_lines.py
  reads the terminal on the event loop);
- chat_screen.py and terminal_render.py: what the person at the terminal sees.
"""
