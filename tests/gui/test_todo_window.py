"""The to-do window (``examples/todo_gui``), driven as a person drives it: Tk's own key and mouse events on a
real window under Xvfb, a real server_stub on 127.0.0.1, real device files.

No assertion here is about time: each wait pumps the windows' event loops until the state asked for
shows, and fails (saying what it saw) only after a generous deadline.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from examples.todo.app import MODELS, SCHEMA
from examples.todo_gui.__main__ import build_parser
from examples.todo_gui.model import TodoModel
from examples.todo_gui.sync import SyncBridge, Timing
from examples.todo_gui.window import DONE, TodoWindow
from tests.conftest import Server

from .conftest import Display, Link
from .screenshot import xwd_to_png

pytestmark = pytest.mark.sqlite_only("the to-do app's schema is SQLite's (ON DELETE CASCADE, BOOLEAN DEFAULT 0)")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
TOKENS = {"token-laptop": frozenset({"laptop"}), "token-phone": frozenset({"phone"})}
FAST = Timing(interval=0.5, poll=0.1, max_backoff=0.5)
"""Quick syncs, so the story does not wait on the app's human-paced defaults."""
DEADLINE = 30.0


@pytest.fixture
def open_window(display: Display, tmp_path: Path) -> Iterator[Callable[..., TodoWindow]]:
    """``open_window(node, url, x=..)``: a window on ``tmp_path/<node>.db`` at (x, 0) of the screen."""
    with ExitStack() as stack:
        def open_(node: str, url: str | None, x: int = 0, timing: Timing = FAST) -> TodoWindow:
            model = stack.enter_context(TodoModel(tmp_path / f"{node}.db", server_url=url, node_id=node,
                                                  auth_token=f"token-{node}"))
            root = tk.Tk()
            root.geometry(f"+{x}+0")
            window = TodoWindow(root, model, SyncBridge(model.client, timing), device=node)
            stack.callback(window.close)
            pump([window])
            return window
        yield open_


# -- what a person does: Tk's own events --

def pump(windows: list[TodoWindow]) -> None:
    for window in windows:
        window.root.update()


def wait_for(windows: list[TodoWindow], ready: Callable[[], bool], what: Callable[[], object]) -> None:
    """Pump the windows' loops until ``ready()``; fail with ``what()`` after ``DEADLINE`` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; the windows show: {what()!r}")
        pump(windows)
        time.sleep(0.01)  # leave the sync threads the interpreter


def widget(window: TodoWindow, path: str) -> tk.Misc:
    return window.root.nametowidget(path)


def click(window: TodoWindow, path: str) -> None:
    """Press and release mouse button 1 in the middle of a button."""
    button = widget(window, path)
    x, y = button.winfo_width() // 2, button.winfo_height() // 2
    button.event_generate("<Enter>", x=x, y=y)
    button.event_generate("<ButtonPress-1>", x=x, y=y)
    button.event_generate("<ButtonRelease-1>", x=x, y=y)
    pump([window])


def type_into(window: TodoWindow, path: str, text: str, enter: bool = False) -> None:
    """Focus an entry and type ``text`` key by key (letters and spaces), then Return if ``enter``."""
    entry = widget(window, path)
    entry.focus_force()
    pump([window])
    for char in text:
        entry.event_generate("<KeyPress>", keysym="space" if char == " " else char)
    if enter:
        entry.event_generate("<KeyPress>", keysym="Return")
    pump([window])


def click_row(window: TodoWindow, path: str, text: str) -> None:
    """Click the list (``lists``) or task (``tasks``) named ``text``."""
    tree = widget(window, path)
    assert isinstance(tree, tk.ttk.Treeview)
    column = "name" if path.endswith(".lists") else "title"
    matches = [iid for iid in tree.get_children() if tree.set(iid, column) == text]
    assert len(matches) == 1, f"{path}: {text!r} is on {len(matches)} rows"
    tree.see(matches[0])
    pump([window])
    x, y, width, height = tree.bbox(matches[0])
    tree.event_generate("<ButtonPress-1>", x=x + width // 2, y=y + height // 2)
    tree.event_generate("<ButtonRelease-1>", x=x + width // 2, y=y + height // 2)
    pump([window])
    assert tree.selection() == (matches[0],)


# -- what the window shows --

def shown(window: TodoWindow) -> dict[str, set[tuple[str, bool]]]:
    """Each list's tasks as the window draws them (title, done): clicks through every list."""
    shown: dict[str, set[tuple[str, bool]]] = {}
    lists = window.lists
    for iid in lists.get_children():
        click_row(window, "lists_pane.lists", lists.set(iid, "name"))
        while window.drawing:
            pump([window])
        tasks = window.tasks
        shown[lists.set(iid, "name")] = {(tasks.set(task, "title"), tasks.set(task, "done") == DONE)
                                          for task in tasks.get_children()}
    return shown


def list_names(window: TodoWindow) -> list[str]:
    return [window.lists.set(iid, "name") for iid in window.lists.get_children()]


def task_titles(window: TodoWindow) -> list[str]:
    return [window.tasks.set(iid, "title") for iid in window.tasks.get_children()]


def status(window: TodoWindow) -> str:
    return str(window.status.cget("text"))


def settled(window: TodoWindow) -> bool:
    """Online, nothing pending, not syncing, the task list fully drawn."""
    text = status(window)
    return " online " in f" {text} " and "0 pending" in text and "syncing" not in text and not window.drawing


@contextmanager
def artifacts_dir() -> Iterator[Path]:
    """``tests/artifacts`` (gitignored); a temp folder where the checkout is read-only."""
    try:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        probe = ARTIFACTS / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
        yield ARTIFACTS
    except OSError:
        yield Path(tempfile.mkdtemp(prefix="todo-gui-artifacts-"))


def screenshot(display: Display, windows: list[TodoWindow], name: str) -> Path:
    """The screen rectangle the windows (and their dialogs) cover, as a PNG in the artifacts folder (printed)."""
    pump(windows)
    tops = [top for w in windows for top in (w.root, *w.root.winfo_children()) if isinstance(top, (tk.Tk, tk.Toplevel))]
    right = max(top.winfo_rootx() + top.winfo_width() for top in tops)
    bottom = max(top.winfo_rooty() + top.winfo_height() for top in tops)
    with artifacts_dir() as folder:
        path = folder / name
        xwd_to_png(display.framebuffer, path, (0, 0, right, bottom))
    print(f"screenshot: {path}")
    return path


# -- the tests --

def test_two_windows_edit_offline_and_show_the_merged_state_after_reconnect(
        server: Server, open_window: Callable[..., TodoWindow], display: Display) -> None:
    url = server(schema=SCHEMA, models=MODELS, tokens=TOKENS)
    link = Link(url)  # the phone's network
    link.up()
    laptop = open_window("laptop", url, x=0)
    phone = open_window("phone", link.url(), x=laptop.root.winfo_width() + 4)
    both = [laptop, phone]

    # the laptop starts a list; the phone receives it
    type_into(laptop, "lists_pane.list_name", "Groceries", enter=True)
    for title in ("milk", "bread", "eggs"):
        type_into(laptop, "tasks_pane.task_title", title)
        click(laptop, "tasks_pane.add_task")
    assert task_titles(laptop) == ["bread", "eggs", "milk"]
    wait_for(both, lambda: task_titles(phone) == ["bread", "eggs", "milk"] and settled(laptop) and settled(phone),
             lambda: (task_titles(phone), status(laptop), status(phone)))

    # the phone loses its network; both keep editing
    link.down()
    click_row(phone, "tasks_pane.tasks", "milk")
    click(phone, "tasks_pane.toggle_done")
    click_row(phone, "tasks_pane.tasks", "bread")
    click(phone, "tasks_pane.delete_task")
    click_row(phone, "tasks_pane.tasks", "eggs")
    type_into(phone, "tasks_pane.task_title", "brown eggs")
    click(phone, "tasks_pane.rename_task")
    type_into(phone, "lists_pane.list_name", "Hardware")
    click(phone, "lists_pane.add_list")
    type_into(phone, "tasks_pane.task_title", "nails", enter=True)
    assert list_names(phone) == ["Groceries", "Hardware"] and task_titles(phone) == ["nails"]
    wait_for([phone], lambda: "offline" in status(phone) and "5 pending" in status(phone), lambda: status(phone))

    click_row(laptop, "tasks_pane.tasks", "milk")
    type_into(laptop, "tasks_pane.task_title", "oat milk")
    click(laptop, "tasks_pane.rename_task")
    click_row(laptop, "tasks_pane.tasks", "eggs")  # the phone renamed it too: the later rename wins
    type_into(laptop, "tasks_pane.task_title", "free range eggs")
    click(laptop, "tasks_pane.rename_task")
    type_into(laptop, "tasks_pane.task_title", "coffee", enter=True)
    assert task_titles(laptop) == ["bread", "coffee", "free range eggs", "oat milk"]
    wait_for(both, lambda: settled(laptop), lambda: status(laptop))
    assert "offline" in status(phone)

    # the network comes back: the phone syncs on its own, the laptop pulls, both windows show the merge
    link.up()
    merged = {"Groceries": {("coffee", False), ("free range eggs", False), ("oat milk", True)},
              "Hardware": {("nails", False)}}

    def converged() -> bool:
        return all(settled(w) and list_names(w) == ["Groceries", "Hardware"] for w in both) \
            and all(shown(w) == merged for w in both)

    wait_for(both, converged, lambda: [(shown(w), status(w)) for w in both])
    click_row(laptop, "lists_pane.lists", "Groceries")
    click_row(phone, "lists_pane.lists", "Groceries")
    assert "last sync" in status(phone) and "failed" not in status(phone)

    # the phone's rename of the eggs lost to the laptop's later one: its conflicts view says so
    wait_for(both, lambda: widget(phone, "status_bar.show_conflicts").cget("text") == "Conflicts (1)",
             lambda: widget(phone, "status_bar.show_conflicts").cget("text"))
    click(phone, "status_bar.show_conflicts")
    log = widget(phone, ".conflicts.log")
    assert isinstance(log, tk.ttk.Treeview)
    assert [log.item(iid, "values")[1:] for iid in log.get_children()] == [
        ("tasks: free range eggs", "title", "brown eggs", "free range eggs", "remote")]
    path = screenshot(display, both, "todo_gui.png")
    assert path.stat().st_size > 1000
    link.down()


def test_a_window_keeps_running_its_event_loop_while_a_big_sync_runs(
        server: Server, open_window: Callable[..., TodoWindow], tmp_path: Path) -> None:
    url = server(schema=SCHEMA, models=MODELS, tokens=TOKENS)
    rows = 100_000  # the size: the window must not freeze while it arrives
    with TodoModel(tmp_path / "laptop.db", server_url=url, node_id="laptop", auth_token="token-laptop") as seed:
        list_id = seed.add_list("Inventory")
        with seed.db:
            seed.db.executemany("INSERT INTO tasks (id, list_id, title) VALUES (?, ?, ?)",
                                ((f"item-{n:06}", list_id, f"item {n:06}") for n in range(rows)))
        seed.sync()

    ticks = {"syncing": 0, "all": 0}
    phone = open_window("phone", url, timing=Timing(interval=60, poll=0.1, max_backoff=0.5))

    def tick() -> None:  # an after() callback, as a clock or an animation would be
        ticks["all"] += 1
        if phone.status.cget("text").count("syncing"):
            ticks["syncing"] += 1
        if not phone.closed:
            phone.root.after(5, tick)

    phone.root.after(5, tick)
    wait_for([phone], lambda: list_names(phone) == ["Inventory"] and len(task_titles(phone)) == rows and settled(phone),
             lambda: (list_names(phone), len(task_titles(phone)), status(phone)))
    assert ticks["syncing"] > 0, f"the Tk loop ran no after() callback while the sync ran ({ticks})"
    assert phone.heading.cget("text") == f"Tasks in Inventory ({rows})"
    assert task_titles(phone)[:2] == ["item 000000", "item 000001"]


def test_the_readme_shows_the_window_command_and_its_screenshot() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    command = next(line for line in quickstart.splitlines() if " -m examples.todo_gui " in line)
    settings, arguments = command.split(" -m examples.todo_gui ", 1)
    args = build_parser().parse_args(shlex.split(arguments))
    assert (args.device, args.server, args.node_id) == ("laptop.db", "http://127.0.0.1:8000/sync/", "laptop")
    assert settings.startswith("CLIENT_SDK_TOKEN=token-laptop ")  # the token stays off the command line
    assert "](docs/todo_gui.png)" in quickstart and (ROOT / "docs" / "todo_gui.png").stat().st_size > 1000
