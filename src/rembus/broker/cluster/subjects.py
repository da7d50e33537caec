"""Rembus topics as NATS subjects, Rembus patterns as NATS subscriptions.

A Rembus topic is any text; ``/`` separates its segments. A NATS subject is a
sequence of non-empty tokens separated by ``.``, and ``*``, ``>``, ``.`` and
white space may not appear inside a token. Each Rembus segment therefore
becomes one token, escaped reversibly:

* ``A-Z a-z 0-9 -`` stay as they are;
* every other character becomes ``_XX`` for each byte of its UTF-8 encoding
  (``XX`` upper-case hex), so ``_`` itself is ``_5F`` and ``.`` is ``_2E``;
* the empty segment becomes the lone token ``_``, which no other segment can
  produce.

Decoding accepts exactly what encoding produces (one spelling per segment), so
two different topics never share a subject and a subject decodes to one topic.

Subjects of a cluster, ``<c>`` being the escaped cluster name and ``<t>`` the
escaped tenant (one token each):

=======================================  ====================================
``rembus.<c>.pub.live.<t>.<segments…>``  publications of tenant ``t`` on a
                                         topic, for connected subscribers
``rembus.<c>.pub.kept.<t>.<segments…>``  the same, also kept in the archive
                                         stream (subjects :meth:`archive`)
                                         for subscribers that are away
``rembus.<c>.rpc.<t>.<segments…>``       calls of a method exposed in tenant
                                         ``t`` (subscribed in queue group
                                         :data:`RPC_QUEUE`)
``rembus.<c>.direct.<name>``             calls addressed to one named
                                         component
``rembus.<c>.broker.<id>``               messages for one broker
``rembus.<c>.load.<t>.<segments…>``      a broker's calls in flight of a
                                         method (``less_busy``)
``rembus.<c>.at.<id>.<t>.<segments…>``   calls of a method sent to one broker
                                         (``less_busy``)
=======================================  ====================================

A subscription covers both ``live`` and ``kept`` (``rembus.<c>.pub.*.<t>…``)
unless asked for one of them: the publishing broker alone decides whether a
message must be kept.

Rembus patterns (``*`` = one non-empty run of characters without ``/``,
``**`` = any text, ``/`` included; see :func:`rembus_proto.topics.compile_pattern`)
become NATS subscriptions:

* a segment that is exactly ``*`` becomes ``*``;
* a segment with ``*`` among other characters (``temp*``) becomes ``*``, which
  is wider: NATS cannot match inside a token;
* the first segment containing ``**`` becomes ``>`` and ends the subscription;
  exact when that segment is exactly ``**`` and the last one (``a/**``), wider
  otherwise (``a/**/b``, ``a/x**``), since ``>`` only stands at the end.

So a subscription is never narrower than its pattern. NATS ``*`` also accepts
the token of an empty segment, which Rembus ``*`` refuses: the one case where
even an "exact" subscription is wider. The receiving broker therefore always
checks the topic of what arrives with the Rembus matcher of the pattern (it
needs the pattern anyway, to build the key-space delivery); :attr:`Interest.exact`
says when that check cannot fail for topics without empty segments.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Characters a token keeps as they are.
SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
#: The token of an empty segment.
EMPTY = "_"
#: Default bound on the length of a subject: NATS refuses protocol lines longer
#: than its ``max_control_line`` (4096 bytes by default), and a subject shares
#: its line with a reply subject and sizes.
MAX_SUBJECT = 2048

#: The token after ``pub`` of a publication for connected subscribers only.
LIVE = "live"
#: The token after ``pub`` of a publication the archive stream keeps.
KEPT = "kept"
#: The queue group brokers use on ``rpc`` subjects: NATS hands each call to one
#: member of the group (groups are per subject, so one name serves every method).
RPC_QUEUE = "rembus-rpc"

_HEX = "0123456789ABCDEF"
_PREFIX = "rembus"


class SubjectError(ValueError):
    """A topic, name or subject that has no valid mapping (too long, not text, not ours)."""


def encode_segment(segment: str) -> str:
    """One Rembus segment (text without ``/``) as one NATS token."""
    if not segment:
        return EMPTY
    if all(ch in SAFE for ch in segment):
        return segment
    out = []
    for ch in segment:
        if ch in SAFE:
            out.append(ch)
            continue
        try:
            data = ch.encode("utf-8")
        except UnicodeEncodeError:
            raise SubjectError(f"not valid text: {segment!r}") from None
        out.extend(f"_{byte:02X}" for byte in data)
    return "".join(out)


def decode_segment(token: str) -> str:
    """The segment that :func:`encode_segment` turned into ``token``."""
    if token == EMPTY:
        return ""
    data = bytearray()
    i, n = 0, len(token)
    if n == 0:
        raise SubjectError("empty token")
    while i < n:
        ch = token[i]
        if ch in SAFE:
            data.append(ord(ch))
            i += 1
            continue
        hexpair = token[i + 1:i + 3]
        if ch != "_" or len(hexpair) != 2 or any(h not in _HEX for h in hexpair):
            raise SubjectError(f"not an encoded segment: {token!r}")
        byte = int(hexpair, 16)
        if byte < 0x80 and chr(byte) in SAFE:
            raise SubjectError(f"not the canonical spelling: {token!r}")
        data.append(byte)
        i += 3
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SubjectError(f"not UTF-8: {token!r}") from None


def encode_topic(topic: str) -> str:
    """A topic as ``.``-separated tokens, one per ``/``-separated segment."""
    return ".".join(encode_segment(segment) for segment in topic.split("/"))


def decode_topic(tokens: str) -> str:
    """The topic that :func:`encode_topic` turned into ``tokens``."""
    return "/".join(decode_segment(token) for token in tokens.split("."))


@dataclass(frozen=True)
class Interest:
    """A NATS subscription subject for a Rembus subscription.

    ``exact``: NATS delivers exactly the topics the pattern matches, empty
    segments aside (see the module documentation); when false, NATS delivers
    more and the receiver filters.
    """

    subject: str
    exact: bool


def pattern_tokens(pattern: str) -> tuple[str, bool]:
    """The NATS tokens for a Rembus pattern (or plain topic) and whether they are exact."""
    tokens = []
    exact = True
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        if "**" in segment:
            tokens.append(">")
            exact = exact and segment == "**" and index == len(segments) - 1
            break
        if segment == "*":
            tokens.append("*")
        elif "*" in segment:
            tokens.append("*")
            exact = False
        else:
            tokens.append(encode_segment(segment))
    return ".".join(tokens), exact


@dataclass(frozen=True)
class SubjectSpace:
    """The subjects of one cluster; every subject it builds is at most ``max_subject`` long."""

    cluster: str
    max_subject: int = MAX_SUBJECT

    def __post_init__(self) -> None:
        if not self.cluster:
            raise SubjectError("a cluster needs a name")
        self._check(self._root)

    @property
    def _root(self) -> str:
        return f"{_PREFIX}.{encode_segment(self.cluster)}"

    def _check(self, subject: str) -> str:
        if len(subject) > self.max_subject:
            raise SubjectError(f"subject longer than {self.max_subject} characters")
        return subject

    def publish(self, tenant: str, topic: str, kept: bool = False) -> str:
        """Where a publication of ``tenant`` on ``topic`` goes (``kept``: into the archive too)."""
        mode = KEPT if kept else LIVE
        return self._check(f"{self._root}.pub.{mode}.{encode_segment(tenant)}."
                           f"{encode_topic(topic)}")

    def archive(self) -> str:
        """The subjects of the archive stream: every kept publication of the cluster."""
        return f"{self._root}.pub.{KEPT}.>"

    def subscription(self, tenant: str, pattern: str, kept: bool | None = None) -> Interest:
        """What to subscribe to for a subscription (topic or pattern) of ``tenant``.

        ``kept``: only kept (``True``) or only live (``False``) publications;
        both by default.
        """
        tokens, exact = pattern_tokens(pattern)
        mode = "*" if kept is None else KEPT if kept else LIVE
        return Interest(self._check(f"{self._root}.pub.{mode}.{encode_segment(tenant)}."
                                    f"{tokens}"), exact)

    def parse_publish(self, subject: str) -> tuple[str, str, bool]:
        """``(tenant, topic, kept)`` of a subject built by :meth:`publish`."""
        head = f"{self._root}.pub."
        mode, dot, rest = subject[len(head):].partition(".")
        if not subject.startswith(head) or mode not in (LIVE, KEPT):
            raise SubjectError(f"not a publication subject of this cluster: {subject!r}")
        tenant, dot, rest = rest.partition(".")
        if not dot:
            raise SubjectError(f"no topic in {subject!r}")
        return decode_segment(tenant), decode_topic(rest), mode == KEPT

    def rpc(self, tenant: str, method: str) -> str:
        """Where calls of ``method`` exposed in ``tenant`` go."""
        return self._check(f"{self._root}.rpc.{encode_segment(tenant)}.{encode_topic(method)}")

    def direct(self, component: str) -> str:
        """Where calls addressed to the named ``component`` go."""
        return self._check(f"{self._root}.direct.{encode_segment(component)}")

    def load(self, tenant: str, method: str) -> str:
        """Where brokers report their calls in flight of ``method`` exposed in ``tenant``."""
        return self._check(f"{self._root}.load.{encode_segment(tenant)}.{encode_topic(method)}")

    def loads(self) -> str:
        """Every load report of the cluster."""
        return f"{self._root}.load.>"

    def rpc_at(self, broker_id: str, tenant: str, method: str) -> str:
        """Calls of ``method`` in ``tenant`` sent to one broker (``less_busy``)."""
        return self._check(f"{self._root}.at.{encode_segment(broker_id)}."
                           f"{encode_segment(tenant)}.{encode_topic(method)}")

    def rpcs_at(self, broker_id: str) -> str:
        """Every call sent to one broker by :meth:`rpc_at`."""
        return self._check(f"{self._root}.at.{encode_segment(broker_id)}.>")

    def parse_method(self, subject: str, kind: str) -> tuple[str, str]:
        """``(tenant, method)`` of a subject built by :meth:`load` (``kind`` ``"load"``)
        or :meth:`rpc_at` (``kind`` ``"at"``)."""
        head = f"{self._root}.{kind}."
        if not subject.startswith(head) or kind not in ("load", "at"):
            raise SubjectError(f"not a {kind} subject of this cluster: {subject!r}")
        rest = subject[len(head):]
        if kind == "at":
            rest = rest.partition(".")[2]
        tenant, dot, method = rest.partition(".")
        if not dot:
            raise SubjectError(f"no method in {subject!r}")
        return decode_segment(tenant), decode_topic(method)

    def broker(self, broker_id: str) -> str:
        """The inbox of one broker of the cluster."""
        return self._check(f"{self._root}.broker.{encode_segment(broker_id)}")

    def bucket(self, purpose: str) -> str:
        """A JetStream key-value bucket name of this cluster (``[A-Za-z0-9_-]`` only)."""
        return self._check(f"{_PREFIX}_{encode_segment(self.cluster)}_{purpose}")
