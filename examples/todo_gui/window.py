"""The to-do window (Tkinter): lists on the left, the selected list's tasks on the right, a status bar below.

Everything here runs on the Tk thread. Local edits go straight to the app's SQLite connection (the SDK's
triggers record them); syncs run on the SDK's auto-sync thread, and what they report reaches this
thread through :class:`SyncBridge`'s queue, drained every ``poll_ms`` by ``after()``. Large task lists
are (re)drawn a chunk per ``after()`` tick, so neither a sync nor its aftermath freezes the window.

Widgets have names, so tests (and accessibility tools) can find them: ``lists``, ``list_name``,
``add_list``, ``rename_list``, ``delete_list``, ``tasks``, ``task_title``, ``add_task``, ``rename_task``,
``toggle_done``, ``delete_task``, ``status``, ``message``, ``sync_now``, ``show_conflicts``; the
conflicts window is ``conflicts`` with its table ``log``.
"""

from __future__ import annotations

import sqlite3
import tkinter as tk
from collections.abc import Callable, Iterator
from dataclasses import replace
from tkinter import ttk

from client_sdk import ClientStatus, SyncChanges, SyncError

from .model import TaskRow, TodoModel
from .sync import SyncBridge

DONE = "\u2713"
CHUNK = 1000
"""Task rows drawn per ``after()`` tick while a big list is (re)drawn."""


class TodoWindow:
    def __init__(self, root: tk.Tk, model: TodoModel, bridge: SyncBridge, *, device: str, poll_ms: int = 50) -> None:
        self.root = root
        self.model = model
        self.bridge = bridge
        self.device = device
        self.poll_ms = poll_ms
        self.closed = False
        self.drawing = False
        """A task list is being drawn chunk by chunk."""
        self._draw_job: Iterator[None] | None = None
        self._shown_list: str | None = None
        self._shown: dict[str, tuple[str, bool]] = {}
        self._status: ClientStatus = model.client.status()
        self._conflicts: ttk.Treeview | None = None
        root.title(f"To-do \u2014 {device}")
        root.protocol("WM_DELETE_WINDOW", self.close)
        self._build()
        self.refresh()
        self._show_status()
        self.bridge.start()
        self._poll_id: str | None = root.after(poll_ms, self._poll)

    # -- layout --
    def _build(self) -> None:
        root = self.root
        root.columnconfigure(1, weight=1)
        root.rowconfigure(0, weight=1)

        left = ttk.Frame(root, name="lists_pane", padding=6)
        left.grid(row=0, column=0, sticky="nsew")
        left.rowconfigure(1, weight=1)
        ttk.Label(left, text="Lists", font="TkHeadingFont").grid(row=0, column=0, columnspan=3, sticky="w")
        self.lists = ttk.Treeview(left, name="lists", columns=("name", "open"), show="", selectmode="browse", height=12)
        self.lists.column("name", width=170)
        self.lists.column("open", width=36, anchor="e")
        self.lists.grid(row=1, column=0, columnspan=3, sticky="nsew")
        self.lists.bind("<<TreeviewSelect>>", lambda _e: self._list_selected())
        self.list_name = ttk.Entry(left, name="list_name", width=22)
        self.list_name.grid(row=2, column=0, columnspan=3, sticky="ew", pady=(6, 2))
        self.list_name.bind("<Return>", lambda _e: self.add_list())
        ttk.Button(left, name="add_list", text="Add list", command=self.add_list).grid(row=3, column=0, sticky="ew")
        ttk.Button(left, name="rename_list", text="Rename", command=self.rename_list).grid(row=3, column=1, sticky="ew")
        ttk.Button(left, name="delete_list", text="Delete", command=self.delete_list).grid(row=3, column=2, sticky="ew")

        right = ttk.Frame(root, name="tasks_pane", padding=6)
        right.grid(row=0, column=1, sticky="nsew")
        right.columnconfigure(0, weight=1)
        right.rowconfigure(1, weight=1)
        self.heading = ttk.Label(right, name="heading", text="Tasks", font="TkHeadingFont")
        self.heading.grid(row=0, column=0, columnspan=5, sticky="w")
        self.tasks = ttk.Treeview(right, name="tasks", columns=("done", "title"), show="", selectmode="browse", height=12)
        self.tasks.column("done", width=28, anchor="center", stretch=False)
        self.tasks.column("title", width=260)
        self.tasks.tag_configure("done", foreground="gray50")
        self.tasks.grid(row=1, column=0, columnspan=4, sticky="nsew")
        scroll = ttk.Scrollbar(right, orient="vertical", command=self.tasks.yview)
        scroll.grid(row=1, column=4, sticky="ns")
        self.tasks.configure(yscrollcommand=scroll.set)
        self.tasks.bind("<space>", lambda _e: self.toggle_done())
        self.tasks.bind("<Delete>", lambda _e: self.delete_task())
        self.tasks.bind("<Double-Button-1>", lambda _e: self._edit_selected_title())
        self.task_title = ttk.Entry(right, name="task_title")
        self.task_title.grid(row=2, column=0, columnspan=5, sticky="ew", pady=(6, 2))
        self.task_title.bind("<Return>", lambda _e: self.add_task())
        for column, (name, text, command) in enumerate((
                ("add_task", "Add task", self.add_task), ("rename_task", "Rename", self.rename_task),
                ("toggle_done", "Done / undo", self.toggle_done), ("delete_task", "Delete", self.delete_task))):
            ttk.Button(right, name=name, text=text, command=command).grid(row=3, column=column, sticky="ew")

        bar = ttk.Frame(root, name="status_bar", padding=(6, 2), relief="sunken")
        bar.grid(row=1, column=0, columnspan=2, sticky="ew")
        bar.columnconfigure(0, weight=1)
        self.status = ttk.Label(bar, name="status", text="")
        self.status.grid(row=0, column=0, sticky="w")
        self.message = ttk.Label(bar, name="message", text="", foreground="firebrick")
        self.message.grid(row=1, column=0, sticky="w")
        self.show_conflicts = ttk.Button(bar, name="show_conflicts", text="Conflicts (0)", command=self.open_conflicts)
        self.show_conflicts.grid(row=0, column=1, rowspan=2, padx=4)
        self.sync_button = ttk.Button(bar, name="sync_now", text="Sync now", command=self.bridge.sync_now)
        self.sync_button.grid(row=0, column=2, rowspan=2)
        if not self.bridge.has_server:
            self.sync_button.state(["disabled"])

    # -- what is selected --
    def selected_list(self) -> str | None:
        selection = self.lists.selection()
        return selection[0] if selection else None

    def selected_task(self) -> str | None:
        selection = self.tasks.selection()
        return selection[0] if selection else None

    # -- local edits (all work offline) --
    def add_list(self) -> None:
        name = self.list_name.get().strip()
        if not name:
            return self._say("Type the new list's name first.")
        list_id = self._write(lambda: self.model.add_list(name))
        if list_id is not None:
            self.list_name.delete(0, "end")
            self.refresh(select_list=list_id)

    def rename_list(self) -> None:
        name, list_id = self.list_name.get().strip(), self.selected_list()
        if not name or list_id is None:
            return self._say("Select a list and type its new name.")
        if self._write(lambda: self.model.rename_list(list_id, name)) is not None:
            self.list_name.delete(0, "end")
            self.refresh()

    def delete_list(self) -> None:
        list_id = self.selected_list()
        if list_id is None:
            return self._say("Select a list to delete.")
        if self._write(lambda: self.model.delete_list(list_id)) is not None:
            self.refresh()

    def add_task(self) -> None:
        title, list_id = self.task_title.get().strip(), self.selected_list()
        if list_id is None:
            return self._say("Add or select a list first.")
        if not title:
            return self._say("Type the task first.")
        if self._write(lambda: self.model.add_task(list_id, title)) is not None:
            self.task_title.delete(0, "end")
            self.refresh()

    def rename_task(self) -> None:
        title, task_id = self.task_title.get().strip(), self.selected_task()
        if not title or task_id is None:
            return self._say("Select a task and type its new title.")
        if self._write(lambda: self.model.rename_task(task_id, title)) is not None:
            self.task_title.delete(0, "end")
            self.refresh()

    def toggle_done(self) -> None:
        task_id = self.selected_task()
        if task_id is None:
            return self._say("Select a task to mark done.")
        done = not self._shown.get(task_id, ("", False))[1]
        if self._write(lambda: self.model.mark_done(task_id, done)) is not None:
            self.refresh()

    def delete_task(self) -> None:
        task_id = self.selected_task()
        if task_id is None:
            return self._say("Select a task to delete.")
        if self._write(lambda: self.model.delete_task(task_id)) is not None:
            self.refresh()

    def _edit_selected_title(self) -> None:
        task_id = self.selected_task()
        if task_id is not None:
            self.task_title.delete(0, "end")
            self.task_title.insert(0, self._shown.get(task_id, ("", False))[0])
            self.task_title.focus_set()

    def _write(self, write: Callable[[], object]) -> object | None:
        """Run a local write; a refusal is shown in the status bar. Returns ``None`` when it failed."""
        try:
            done = write()
        except (sqlite3.Error, SyncError) as exc:
            self._say(f"Not saved: {exc}")
            return None
        self._say("")
        self._status = replace(self._status, pending=self.model.client.pending_count())
        self._show_status()
        self.bridge.sync_now()
        return True if done is None else done

    def _say(self, text: str) -> None:
        self.message.configure(text=text)

    # -- drawing the data --
    def refresh(self, select_list: str | None = None) -> None:
        """Redraw the lists, and the selected list's tasks (a big list over several ``after()`` ticks)."""
        lists = self.model.lists()
        wanted = {item.id for item in lists}
        gone = [iid for iid in self.lists.get_children() if iid not in wanted]
        if gone:
            self.lists.delete(*gone)
        for index, item in enumerate(lists):
            if self.lists.exists(item.id):
                self.lists.item(item.id, values=(item.name, item.open_tasks))
                self.lists.move(item.id, "", index)
            else:
                self.lists.insert("", index, iid=item.id, values=(item.name, item.open_tasks))
        chosen = select_list if select_list in wanted else self.selected_list()
        if chosen is None and lists:
            chosen = lists[0].id
        if chosen is not None and self.lists.selection() != (chosen,):
            self.lists.selection_set(chosen)
            self.lists.see(chosen)
        self._draw_tasks(chosen)
        self._count_conflicts()

    def _list_selected(self) -> None:
        if self.selected_list() != self._shown_list:
            self._draw_tasks(self.selected_list())

    def _draw_tasks(self, list_id: str | None) -> None:
        count = self.model.count_tasks(list_id) if list_id is not None else 0
        name = self.lists.set(list_id, "name") if list_id is not None else ""
        self.heading.configure(text=f"Tasks in {name} ({count})" if list_id is not None else "No list yet")
        same_list = list_id == self._shown_list
        self._shown_list = list_id
        if same_list and list_id is not None and count <= CHUNK and not self.drawing:
            rows = self.model.tasks_of(list_id)
            if [row.id for row in rows] == list(self.tasks.get_children()):
                for row in rows:  # the same rows in the same order: update the ones that changed
                    if self._shown.get(row.id) != (row.title, row.done):
                        self._set_row(row)
                return
        self._draw_job = self._redraw(list_id, keep=self.tasks.selection() if same_list else (),
                                      top=self.tasks.yview()[0] if same_list else 0.0)
        if not self.drawing:
            self.drawing = True
            self.root.after(0, self._draw_step)

    def _redraw(self, list_id: str | None, keep: tuple[str, ...], top: float) -> Iterator[None]:
        """Draw a list's tasks afresh, reading and drawing ``CHUNK`` rows per step, so that a list of any
        length never holds up the Tk loop for long; the selection and the scroll position stay."""
        self.tasks.delete(*self.tasks.get_children())
        self._shown = {}
        offset = 0
        while list_id is not None:
            rows = self.model.tasks_of(list_id, CHUNK, offset)
            for row in rows:
                if row.id in self._shown:  # the list changed between two pages: the next refresh redraws it
                    continue
                self.tasks.insert("", "end", iid=row.id)
                self._set_row(row)
                if row.id in keep:
                    self.tasks.selection_set(row.id)
            if len(rows) < CHUNK:
                self.tasks.yview_moveto(top)
                return
            offset += CHUNK
            yield

    def _draw_step(self) -> None:
        job = self._draw_job
        if self.closed or job is None:
            self.drawing = False
            return
        try:
            next(job)
        except StopIteration:
            self._draw_job = None
            self.drawing = False
            return
        self.root.after(1, self._draw_step)

    def _set_row(self, row: TaskRow) -> None:
        self.tasks.item(row.id, values=(DONE if row.done else "", row.title), tags=("done",) if row.done else ())
        self._shown[row.id] = (row.title, row.done)

    # -- the status bar --
    def _show_status(self) -> None:
        status = self._status
        if not self.bridge.has_server:
            connection = "offline (no server configured)"
        else:
            connection = {None: "connecting\u2026", True: "online", False: "offline"}[status.online]
        parts = [self.device, connection]
        if status.syncing:
            parts.append("syncing\u2026")
        parts.append(f"{status.pending} pending")
        last = status.last_sync
        if last is not None:
            at = last.at.astimezone().strftime("%H:%M:%S")
            parts.append(f"last sync {at}" + ("" if last.ok else f" failed: {last.error}"))
        else:
            parts.append("never synced")
        if status.quarantined:
            parts.append(f"{status.quarantined} not pushable")
        if status.held_back:
            parts.append(f"{status.held_back} held back")
        self.status.configure(text=" \u00b7 ".join(parts))

    def _count_conflicts(self) -> None:
        count = len(self.model.client.conflicts())
        self.show_conflicts.configure(text=f"Conflicts ({count})")
        if self._conflicts is not None:
            self._fill_conflicts()

    # -- news from the sync thread --
    def _poll(self) -> None:
        if self.closed:
            return
        changed = False
        for kind, value in self.bridge.drain():
            if kind == "status":
                self.on_status(value)
            elif kind == "changes":
                changed = changed or self.on_change(value)
            elif kind == "error":
                self._say(f"Sync failed: {value}")
        if changed:
            self.refresh()
        self._poll_id = self.root.after(self.poll_ms, self._poll)

    def on_status(self, status: ClientStatus) -> None:
        ended = self._status.syncing and not status.syncing
        # counted on the sync thread, maybe before edits made here since: count again, as of now
        self._status = replace(status, pending=self.model.client.pending_count())
        self._show_status()
        if ended:
            if status.last_sync is not None and status.last_sync.ok:
                self._say("")
            self._count_conflicts()

    def on_change(self, changes: SyncChanges) -> bool:
        """Whether the sync changed rows this window shows."""
        return bool(changes.tables & {"lists", "tasks"})

    # -- the conflicts view --
    def open_conflicts(self) -> None:
        if self._conflicts is not None:
            self._conflicts.winfo_toplevel().lift()
            return
        top = tk.Toplevel(self.root, name="conflicts")
        top.title(f"Conflicts \u2014 {self.device}")
        top.geometry(f"+{self.root.winfo_rootx()}+{self.root.winfo_rooty() + self.root.winfo_height() + 8}")
        columns = ("when", "row", "field", "local", "remote", "winner")
        log = ttk.Treeview(top, name="log", columns=columns, show="headings", height=6)
        for column, width in zip(columns, (70, 200, 60, 120, 120, 70), strict=True):
            log.heading(column, text=column)
            log.column(column, width=width)
        log.pack(fill="both", expand=True)
        ttk.Button(top, name="close", text="Close", command=self._close_conflicts).pack(anchor="e", padx=6, pady=6)
        top.protocol("WM_DELETE_WINDOW", self._close_conflicts)
        self._conflicts = log
        self._fill_conflicts()

    def _fill_conflicts(self) -> None:
        log = self._conflicts
        if log is None:
            return
        log.delete(*log.get_children())
        tables = {label: table for table, label in self.model.client.models.items()}
        for record in self.model.client.conflicts(200):
            table = tables.get(record.model_label, record.model_label)
            when = record.at.astimezone().strftime("%H:%M:%S")
            row = f"{table}: {self.model.describe(table, record.key)}"
            if not record.fields:
                log.insert("", "end", values=(when, row, f"({record.conflict_type})", "", "", record.winner))
            for field, clash in record.fields.items():
                log.insert("", "end", values=(when, row, field, clash.get("local"), clash.get("remote"), clash.get("winner")))

    def _close_conflicts(self) -> None:
        if self._conflicts is not None:
            self._conflicts.winfo_toplevel().destroy()
            self._conflicts = None

    # -- lifetime --
    def close(self) -> None:
        """Stop syncing and polling and destroy the window (the caller closes the model)."""
        if self.closed:
            return
        self.closed = True
        if self._poll_id is not None:
            self.root.after_cancel(self._poll_id)
        self.bridge.close()
        self.root.destroy()
