"""REPL commands on files: send one to the current chat, download an attachment.
Each is listed, with its usage and help, in COMMANDS at the end (client/repl_commands.py
joins the areas' lists into the REPL's one table)."""
from __future__ import annotations

import sys
from pathlib import Path

from .render import human_size
from .repl_books import CommandError, Progress, needs, split_first, split_path
from .command import Command
from .repl_session import Session


async def send(repl: Session, arg: str) -> None:
    """Send a file (with optional text), or plain text, to the current chat."""
    arg = arg.strip()
    if not arg.startswith("--file"):
        await repl.send(chat_id=repl.current, text=needs(arg, "/send --file PATH"))
        return
    path_text, text = split_path(arg[len("--file"):])
    if not path_text:
        raise CommandError("usage: /send --file PATH [text]")
    path = Path(path_text).expanduser()
    progress = Progress(sys.stdout, f"uploading {path.name}")
    try:
        info = await repl.client.upload(path, progress=progress)
    finally:
        progress.finish()
    repl.ids.files[info["file_id"]] = info["name"]
    await repl.send(chat_id=repl.current, text=text or None,
                    attachments=[info["file_id"]])


async def download(repl: Session, arg: str) -> None:
    """Download an attachment."""
    ref, dest_text = split_first(needs(arg, "/download ID [PATH]"))
    file_id = repl.ids.resolve(ref.removeprefix("id="))
    dest = Path(dest_text).expanduser() if dest_text else Path(".")
    name = repl.ids.files.get(file_id, file_id)
    progress = Progress(sys.stdout, f"downloading {name}")
    try:
        result = await repl.client.download(file_id, dest, progress=progress,
                                            overwrite=False)
    finally:
        progress.finish()
    renamed = result.get("renamed_from")
    kept = f"; {renamed} exists, kept as is" if renamed else ""
    repl.out(f"* saved {result['path']} ({human_size(result['size'])}{kept})")


# This area's part of the REPL's command table, in /help order.
COMMANDS: list[Command] = [
    Command("/send", "--file PATH [text]", "send a file (and text) to the current chat",
            send),
    Command("/download", "ID [PATH]", "download an attachment", download),
]
