"""Client side of the messenger: the async library, the `messenger` CLI and the REPL."""
from .api import MessengerClient, ProgressCallback
from .errors import MessengerError, RpcError, ServerUnavailable
from .models import (
    BanEvent,
    Chat,
    ChatEvent,
    ChatInfo,
    ChatResult,
    ConnectResult,
    DownloadResult,
    EditResult,
    Event,
    FileInfo,
    HistoryResult,
    JoinDecidedEvent,
    JoinRequestEvent,
    JoinResult,
    LinkResult,
    Message,
    MessageDeletedEvent,
    MessageEditedEvent,
    MessageEvent,
    PollResult,
    ReadEvent,
    ReportResult,
    Scheduled,
    ScheduledEvent,
    ScheduledList,
    SearchResult,
    SendResult,
    SessionInfo,
    Status,
)
from .poll import EventHandler, PollLoop

__all__ = [
    "BanEvent", "Chat", "ChatEvent", "ChatInfo", "ChatResult", "ConnectResult",
    "DownloadResult", "Event", "EventHandler", "FileInfo", "HistoryResult", "JoinDecidedEvent",
    "JoinRequestEvent", "JoinResult", "LinkResult", "Message", "MessageEvent",
    "MessengerClient", "MessengerError", "PollLoop", "PollResult", "ProgressCallback",
    "ReportResult", "RpcError", "Scheduled", "ScheduledEvent", "ScheduledList", "SendResult",
    "ServerUnavailable", "SessionInfo", "Status",
    # messenger essentials
    "EditResult", "MessageDeletedEvent", "MessageEditedEvent", "ReadEvent", "SearchResult",
]
