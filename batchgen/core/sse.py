"""Server-sent events framing (the WHATWG rules batchgen needs): lines in, (event, data) out. Comments, such as the
API's `: keep-alive`, dispatch nothing but still show the stream is delivering."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SSEDecoder:
    """Feed one line at a time (without its line ending); a blank line dispatches the event gathered so far."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            dispatched = (self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return dispatched
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # id, retry and unknown fields: batchgen needs none of them
