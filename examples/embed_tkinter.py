"""Run a rembus.blocking component inside a Tkinter application's event loop.

Tk owns the loop. Tk watches the component's socket (``createfilehandler``,
Unix) and one Tk timer (``root.after``) wakes the component at its
:meth:`next_deadline`; each wake-up calls ``process(0)``, which runs the
handlers inline, on the Tk thread, so they may update widgets directly.

Run a broker first, then: python examples/embed_tkinter.py [messages]
The window shows the last temperature received and the last sum computed for
an ``add(x, y)`` call; it closes after ``messages`` temperatures (default: when
the window is closed).
"""

from __future__ import annotations

import sys
import time
import tkinter

import rembus.blocking


class TkPump:
    """Let the Tk event loop drive a blocking component."""

    def __init__(self, root: tkinter.Tk, rb: rembus.blocking.Component) -> None:
        self.root, self.rb = root, rb
        self._fd = -1
        self._timer: str | None = None
        self.pump()

    def pump(self, *_: object) -> None:
        """Do what is due, then tell Tk what to wait for next."""
        self.rb.process(0)
        self._arm()

    def _arm(self) -> None:
        rb, tk = self.rb, self.root.tk
        # Registered again on every turn: the socket changes when the component
        # reconnects, and writability matters only while output waits.
        if self._fd >= 0:
            tk.deletefilehandler(self._fd)
        self._fd = rb.fileno()
        if self._fd >= 0:
            mask = tkinter.READABLE | (tkinter.WRITABLE if rb.want_write() else 0)
            tk.createfilehandler(self._fd, mask, self.pump)
        if self._timer is not None:
            self.root.after_cancel(self._timer)
            self._timer = None
        deadline = rb.next_deadline()
        if deadline is not None:
            delay = max(0, round((deadline - time.monotonic()) * 1000))
            self._timer = self.root.after(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.pump()

    def stop(self) -> None:
        """Stop watching the socket and the timer (before closing the component)."""
        if self._fd >= 0:
            self.root.tk.deletefilehandler(self._fd)
            self._fd = -1
        if self._timer is not None:
            self.root.after_cancel(self._timer)
            self._timer = None


def main(limit: int | None) -> None:
    root = tkinter.Tk()
    root.title("rembus in Tk")
    temperature_label = tkinter.Label(root, text="no temperature yet", width=40)
    temperature_label.pack()
    sum_label = tkinter.Label(root, text="no sum yet", width=40)
    sum_label.pack()
    received = 0

    def temperature(room: str, value: float) -> None:
        nonlocal received
        received += 1
        temperature_label.config(text=f"{room}: {value}")  # a handler runs on the Tk thread
        print(f"{room}: {value}", flush=True)
        if limit is not None and received >= limit:
            root.quit()

    def add(x: float, y: float) -> float:
        sum_label.config(text=f"{x} + {y} = {x + y}")
        print(f"add({x}, {y})", flush=True)
        return x + y

    rb = rembus.blocking.component("embed_tkinter")
    pump = TkPump(root, rb)
    try:
        rb.expose(add)
        rb.subscribe(temperature)
        pump.pump()  # after calling the component outside the pump: re-arm what Tk waits for
        print("ready", flush=True)
        root.mainloop()
    finally:
        pump.stop()
        rb.close()
        root.destroy()
    print(f"done after {received} messages", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
