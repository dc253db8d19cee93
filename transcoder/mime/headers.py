"""Parsing of structured header field values: MIME parameters and address lists.

Pure functions over ``str`` values decoded latin-1 (so every octet of the
source survives and ``value.encode("latin-1")`` gives the original bytes back).

* :func:`parse_media_type` / :func:`parse_disposition` -- ``type/subtype;
  name=value`` (RFC 2045 section 5.1, RFC 2183) with RFC 2231 continuations and
  charset/language encoding.  Parameter names are lowercased, values keep their
  case.  Two views of the parameters are returned: *decoded* (continuations
  joined, RFC 2231 values decoded to text) for programs, and *wire* (continuations
  joined, RFC 2231 values kept encoded as ``name*`` = ``charset'lang'%XX``, the
  way Dovecot reports them) for IMAP BODYSTRUCTURE, which stays 7-bit and lossless.
* :func:`parse_address_list` -- an RFC 5322 section 3.4 ``address-list``
  into the four-part addresses IMAP's ENVELOPE uses, groups included.  A
  bare ``addr-spec`` takes its last comment as its name, as Dovecot does
  (``user@domain (Real Name)``); a display name always comes from a phrase.

Parsing is lenient the way deployed mail needs (unquoted values holding ``=``
or spaces, as Python's :mod:`email` accepts them) and never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

Params = tuple[tuple[str, str], ...]

#: RFC 2045 section 5.1 ``token``: printable US-ASCII minus SPACE and tspecials.
_TOKEN = r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})\s*/\s*({_TOKEN})\Z")
_DISPOSITION = re.compile(rf"({_TOKEN})\Z")
#: RFC 2231 section 3/4 parameter names: ``name*``, ``name*0``, ``name*0*``.
_RFC2231_NAME = re.compile(r"(.+?)\*(?:(\d{1,3})(\*)?)?\Z")
#: RFC 2231 section 7 ``attribute-char``: what stays unescaped in an encoded value.
_ATTRIBUTE_SAFE = "!#$&+-.^_`{|}~"


def _read_comment(text: str, i: int) -> tuple[str, int]:
    """The (nested) comment opening at ``text[i]`` (RFC 5322 section 3.2.2): ``(content, end)``.

    The content is what lies between the outer parentheses, nested ones
    kept, quoted-pairs without their backslash; ``end`` is the index past
    the closing parenthesis (or the end of ``text`` if there is none).
    """
    out: list[str] = []
    depth = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            out.append(text[i + 1 : i + 2])
            i += 1
        elif c == "(":
            depth += 1
            if depth > 1:
                out.append(c)
        elif c == ")":
            depth -= 1
            if depth == 0:
                return "".join(out), i + 1
            out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out), i


def _skip_comment(text: str, i: int) -> int:
    """Index just past the (nested) comment opening at ``text[i]`` (RFC 5322 section 3.2.2)."""
    return _read_comment(text, i)[1]


def _split_segments(value: str) -> list[str]:
    """Split on ``;`` outside quoted strings, dropping comments that start a word."""
    segments: list[str] = []
    current: list[str] = []
    i, quoted = 0, False
    while i < len(value):
        c = value[i]
        if quoted:
            current.append(c)
            if c == "\\" and i + 1 < len(value):
                current.append(value[i + 1])
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
            current.append(c)
        elif c == "(" and (not current or current[-1] in " \t;=/"):
            # A comment (RFC 2045 section 5.1 allows them); "file(1).pdf" is a value.
            i = _skip_comment(value, i)
            continue
        elif c == ";":
            segments.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    segments.append("".join(current))
    return segments


def _unquote(value: str) -> str:
    """The content of a quoted-string (RFC 5322 section 3.2.4), else ``value`` itself."""
    if not value.startswith('"'):
        return value
    out: list[str] = []
    i = 1
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
            continue
        if c == '"':
            break
        out.append(c)
        i += 1
    return "".join(out)


def _raw_parameters(segments: list[str]) -> list[tuple[str, str]]:
    """``(lowercased name, unquoted value)`` for each ``name=value`` segment."""
    pairs = []
    for segment in segments:
        name, eq, value = segment.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        value = value.strip()
        pairs.append((name, _unquote(value)))
    return pairs


def _decode_text(data: bytes, charset: str) -> str:
    """``data`` decoded with an RFC 2231 charset; unknown, empty or unusable ones read as UTF-8.

    The charset comes from the message: Python codecs that are not text
    encodings ("base64", "zlib") or that refuse error handling ("idna",
    "punycode") raise, and must not take the parser down.
    """
    try:
        text = data.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError):
        return data.decode("utf-8", "replace")
    # "raw_unicode_escape" and friends can yield lone surrogates: replace them.
    return text.encode("utf-8", "replace").decode("utf-8")


def _join_rfc2231(base: str, sections: dict[int | None, tuple[str, bool]]) -> tuple[str, str, str]:
    """Join RFC 2231 sections of one parameter: ``(wire name, wire value, decoded value)``."""
    if 0 in sections:
        ordered = []
        index = 0
        while index in sections:  # RFC 2231 section 3: stop at the first gap
            ordered.append(sections[index])
            index += 1
    else:
        ordered = [sections[None]]
    if not ordered[0][1]:
        text = "".join(value for value, _ in ordered)
        return base, text, text
    charset, _, rest = ordered[0][0].partition("'")
    language, _, first = rest.partition("'")
    pieces = [(first, True), *ordered[1:]]
    encoded = "".join(v if ext else quote(v, safe=_ATTRIBUTE_SAFE) for v, ext in pieces)
    raw = b"".join(
        unquote_to_bytes(v) if ext else v.encode("latin-1", "replace") for v, ext in pieces
    )
    return base + "*", f"{charset}'{language}'{encoded}", _decode_text(raw, charset)


def _join_parameters(pairs: list[tuple[str, str]]) -> tuple[Params, Params]:
    """``(decoded, wire)`` parameters, RFC 2231 continuations joined, first occurrence wins."""
    # (True, base) for an RFC 2231 parameter, (False, name) for a plain one: a
    # plain name may itself start with "*" (a damaged "*0=x").
    order: list[tuple[bool, str]] = []
    plain: dict[str, str] = {}
    split: dict[str, dict[int | None, tuple[str, bool]]] = {}
    for name, value in pairs:
        m = _RFC2231_NAME.match(name) if "*" in name else None
        if m is None:
            if name not in plain:
                plain[name] = value
                order.append((False, name))
            continue
        base, index, star = m.group(1), m.group(2), m.group(3)
        key = None if index is None else int(index)
        extended = index is None or star is not None
        sections = split.setdefault(base, {})
        if not sections:
            order.append((True, base))
        sections.setdefault(key, (value, extended))
    decoded: dict[str, str] = {}
    wire: list[tuple[str, str]] = []
    for is_split, name in order:
        if is_split:
            sections = split[name]
            if 0 not in sections and None not in sections:
                continue
            wire_name, wire_value, text = _join_rfc2231(name, sections)
            wire.append((wire_name, wire_value))
            decoded[name] = text  # RFC 2231 form is the precise one: it wins
        else:
            wire.append((name, plain[name]))
            decoded.setdefault(name, plain[name])
    return tuple(decoded.items()), tuple(wire)


def parse_media_type(value: str) -> tuple[str, str, Params, Params] | None:
    """``(type, subtype, decoded params, wire params)`` of a Content-Type value.

    Type and subtype are lowercased.  ``None`` when the ``type/subtype`` part is
    not valid RFC 2045 syntax (the caller then applies the RFC 2045 section 5.2
    default).
    """
    segments = _split_segments(value)
    m = _MEDIA_TYPE.match(segments[0].strip())
    if m is None:
        return None
    decoded, wire = _join_parameters(_raw_parameters(segments[1:]))
    return m.group(1).lower(), m.group(2).lower(), decoded, wire


def parse_disposition(value: str) -> tuple[str, Params, Params] | None:
    """``(type, decoded params, wire params)`` of a Content-Disposition value (RFC 2183).

    The type is lowercased; ``None`` when it is missing or not a token.
    """
    segments = _split_segments(value)
    m = _DISPOSITION.match(segments[0].strip())
    if m is None:
        return None
    decoded, wire = _join_parameters(_raw_parameters(segments[1:]))
    return m.group(1).lower(), decoded, wire


@dataclass(frozen=True)
class Address:
    """One address of an IMAP ENVELOPE (RFC 3501 section 7.4.2).

    ``host is None`` marks RFC 5322 group syntax: with a ``mailbox`` (the
    group's name) it starts a group, with ``mailbox is None`` too it ends one.
    A mailbox written without a domain gets ``host=""``, so it is never read
    as a group marker.  Values are raw (no RFC 2047 decoding, as IMAP wants).
    """

    name: str | None
    route: str | None
    mailbox: str | None
    host: str | None


#: RFC 5322 section 3.2.3 ``specials`` (plus ``[``/``]`` of domain literals).
_SPECIALS = '()<>[]:;@\\,."'
_WORD = re.compile(r'[^\s()<>\[\]:;@\\,."]+')
#: (kind: a=atom q=quoted d=domain literal s=special, text, space before,
#: the last comment between this token and the next, or ``None``)
_Token = tuple[str, str, bool, str | None]


def _tokenize(value: str) -> list[_Token]:
    """RFC 5322 lexical tokens; whitespace is only remembered, comments only after a token."""
    tokens: list[_Token] = []
    i, space = 0, False
    while i < len(value):
        c = value[i]
        if c in " \t\r\n":
            space, i = True, i + 1
        elif c == "(":
            comment, i = _read_comment(value, i)
            space = True
            if tokens:  # a comment before the first token can name nothing
                tokens[-1] = (*tokens[-1][:3], comment)
        elif c in '"[':
            close = '"' if c == '"' else "]"
            j = i + 1
            while j < len(value) and value[j] != close:
                j += 2 if value[j] == "\\" else 1
            tokens.append(("q" if c == '"' else "d", value[i : j + 1], space, None))
            space, i = False, j + 1
        elif c in _SPECIALS:
            tokens.append(("s", c, space, None))
            space, i = False, i + 1
        else:
            m = _WORD.match(value, i)
            end = m.end() if m else i + 1
            tokens.append(("a", value[i:end], space, None))
            space, i = False, end
    return tokens


def _phrase(tokens: list[_Token]) -> str | None:
    """A display name: words joined by single spaces, quoted strings unquoted."""
    out = ""
    for kind, text, space, _ in tokens:
        word = _unquote(text) if kind == "q" else text
        out += (" " if space and out else "") + word
    return out or None


def _compact(tokens: list[_Token]) -> str:
    """A local part, domain or route as written, minus whitespace and comments."""
    return "".join(text for _, text, _, _ in tokens)


def _comment_name(tokens: list[_Token]) -> str | None:
    """The name of an ``addr-spec`` written with comments: the last comment, if not empty.

    RFC 5322 section 3.4 calls ``user@domain (Real Name)`` a legacy form whose
    comment "some legacy implementations interpret"; RFC 3501 section 7.4.2
    leaves the personal name of such an address open.  We read it as Dovecot
    does (lib-mail ``parse_addr_spec``): the last comment from the local
    part to the end of the mailbox, so ``a (x)@b (y)`` is named ``y``, and an
    empty last comment names nothing.
    """
    comments = [comment for *_, comment in tokens if comment is not None]
    return (comments[-1] or None) if comments else None


def _take(tokens: list[_Token], i: int, stops: str) -> tuple[list[_Token], int]:
    """Tokens from ``i`` up to (not including) the first special in ``stops``."""
    j = i
    while j < len(tokens) and not (tokens[j][0] == "s" and tokens[j][1] in stops):
        j += 1
    return tokens[i:j], j


def _angle_address(tokens: list[_Token], i: int, name: str | None) -> tuple[Address | None, int]:
    """``[route ":"] local "@" domain ">"`` after a ``<`` at ``i - 1``."""
    route = None
    if i < len(tokens) and tokens[i][1] == "@":
        words, j = _take(tokens, i, ":>")
        if j < len(tokens) and tokens[j][1] == ":":
            route, i = _compact(words), j + 1
    local, i = _take(tokens, i, "@>")
    domain: list[_Token] = []
    if i < len(tokens) and tokens[i][1] == "@":
        domain, i = _take(tokens, i + 1, ">")
    if not local and not domain:
        return None, i + 1  # "<>", the null reverse-path: no address
    return Address(name, route, _compact(local), _compact(domain)), i + 1


def _mailbox(tokens: list[_Token], i: int, stops: str) -> tuple[Address | None, int]:
    """One mailbox (``name-addr`` or ``addr-spec``) starting at ``i``; stops before ``stops``."""
    words, j = _take(tokens, i, "<@:" + stops)
    at = tokens[j][1] if j < len(tokens) else ""
    if at == "<":
        address, j = _angle_address(tokens, j + 1, _phrase(words))
    elif at == "@":
        domain, j = _take(tokens, j + 1, "<" + stops)
        address = Address(_comment_name(tokens[i:j]), None, _compact(words), _compact(domain))
    else:
        address = Address(_comment_name(words), None, _compact(words), "") if words else None
    _, j = _take(tokens, j, stops)  # anything trailing (":" in a group, junk) is skipped
    return address, j


def parse_address_list(value: str) -> tuple[Address, ...]:
    """The addresses of an RFC 5322 ``address-list``, groups as IMAP marks them."""
    tokens = _tokenize(value)
    out: list[Address] = []
    i = 0
    while i < len(tokens):
        words, j = _take(tokens, i, "<@:,;")
        if j < len(tokens) and tokens[j][1] == ":":  # group: display-name ":" members ";"
            out.append(Address(None, None, _phrase(words) or "", None))
            i = j + 1
            while i < len(tokens) and tokens[i][1] != ";":
                address, i = _mailbox(tokens, i, ",;")
                if address is not None:
                    out.append(address)
                if i < len(tokens) and tokens[i][1] == ",":
                    i += 1
            out.append(Address(None, None, None, None))
        else:
            address, i = _mailbox(tokens, i, ",;")
            if address is not None:
                out.append(address)
        i += 1  # past the "," or ";"
    return tuple(out)
