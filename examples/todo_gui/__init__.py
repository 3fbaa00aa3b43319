"""The to-do app with a window (Tkinter): ``python -m examples.todo_gui --device laptop.db --server URL``."""
