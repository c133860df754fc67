"""Types of agent/sources/_execheld.c: held program starts answered without the GIL."""

class ExecHolder:
    """Answers a fanotify group's held execs on a thread of its own, noting each process."""

    held: int
    lost: int
    running: bool
    notify_fd: int

    def __init__(self, fd: int) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def drain(self) -> list[tuple[int, int, int, bytes]]: ...


def read_records(
    fd: int, roots: tuple[bytes, ...], ignore: tuple[int, ...], size: int
) -> tuple[list[tuple[int, int, str]], int, int, int, int] | None: ...
