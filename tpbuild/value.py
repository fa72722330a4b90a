"""Value classes without `dataclasses`: equal, shown and copied by their fields, as a dataclass is.

Every build imports the engine's records (the action variants, the analysis memo's records, the
workspace's tables). Made with @dataclass, they cost each start the import of `dataclasses` (with
`inspect`, `ast`, `dis`, `tokenize`) and the generation and compilation of every class's methods: 72 M
of the 617 M instructions of an edit's build at 1,000 models. Here a class writes its own constructor
(compiled once, into its .pyc) and names its fields; the rest is shared:

- `__match_args__`: the fields, in the constructor's order (what a memo records of it, memo.py, and
  what `replace` passes on);
- `_compared`: those equality and the hash see (by default all of them), as a dataclass's fields
  with `compare=True`.

`Value` is a mutable record (equal by its fields, unhashable, as `@dataclass`); `Frozen` an immutable
one (as `@dataclass(frozen=True)`): hashed by its compared fields, its fields set only by its
constructor (`object.__setattr__`)."""

from __future__ import annotations

from operator import attrgetter


class Value:
    __slots__ = ()
    __match_args__: tuple[str, ...] = ()
    _compared: tuple[str, ...] | None = None  # None: every field of `__match_args__`

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        compared = cls.__match_args__ if cls._compared is None else cls._compared
        # The class among the values compared: an attrgetter of one name gives a value, not a tuple.
        cls._key = attrgetter(*compared, "__class__")

    def __eq__(self, other) -> bool:
        if other.__class__ is self.__class__:
            return self._key(self) == self._key(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable: as a dataclass with eq and without frozen

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{self.__class__.__qualname__}({shown})"

    def replace(self, **changes):
        """A copy with `changes` (field -> value), as `dataclasses.replace` makes one."""
        return self.__class__(**{**{name: getattr(self, name) for name in self.__match_args__}, **changes})


class Frozen(Value):
    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._key(self))

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a {self.__class__.__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a {self.__class__.__name__}")

    def __reduce__(self):
        # copy and pickle: made again by its constructor (the default sets each slot, which it refuses).
        return _made, (self.__class__, {name: getattr(self, name) for name in self.__match_args__})


def _made(cls: type, fields: dict):
    return cls(**fields)
