"""An offline to-do app on the sync SDK: lists and tasks in SQLite, synced on reconnect."""
