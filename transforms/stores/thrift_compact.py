"""Thrift's compact protocol, read and written without a schema.

Parquet's page headers and file footer are Thrift structs in the compact protocol,
which names every field's type on the wire, so a struct can be decoded into field
ids and typed values, edited, and encoded back without the Parquet IDL. Fields this
code does not know about (newer Parquet versions add some) are carried through
unchanged. Used by ``transforms.stores.latent_parquet``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
_INTS = (I16, I32, I64)


class ThriftError(ValueError):
    """Bytes that are not a well-formed compact-protocol struct."""


@dataclass(slots=True)
class ThriftList:
    """A list or set: the wire type of its elements and the elements."""

    etype: int
    items: list


@dataclass(slots=True)
class Struct:
    """A struct as ``{field id: (wire type, value)}``; booleans are ``TRUE`` with a bool."""

    fields: dict[int, tuple[int, object]] = field(default_factory=dict)

    def get(self, fid: int, default=None):
        entry = self.fields.get(fid)
        return default if entry is None else entry[1]

    def set(self, fid: int, ttype: int, value) -> Struct:
        self.fields[fid] = (TRUE if ttype in (TRUE, FALSE) else ttype, value)
        return self

    def has(self, fid: int) -> bool:
        return fid in self.fields


# -- reading ---------------------------------------------------------------------------
# Plain functions over (bytes, position): a footer has thousands of small fields, and
# method calls per byte made decoding a noticeable share of writing a shard.


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ThriftError("varint too long")


def _read(data: bytes, pos: int, ttype: int, in_list: bool = False):
    if ttype in _INTS:
        n, pos = _get_varint(data, pos)
        return (n >> 1) ^ -(n & 1), pos
    if ttype == BINARY:
        size, pos = _get_varint(data, pos)
        end = pos + size
        if end > len(data):
            raise ThriftError("truncated thrift struct")
        return data[pos:end], end
    if ttype == STRUCT:
        return _read_struct(data, pos)
    if ttype in (TRUE, FALSE):
        # In a struct a bool lives in the field header; in a list it is one byte.
        return (data[pos] == 1, pos + 1) if in_list else (ttype == TRUE, pos)
    if ttype in (LIST, SET):
        head = data[pos]
        pos += 1
        size, etype = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _get_varint(data, pos)
        items = []
        for _ in range(size):
            item, pos = _read(data, pos, etype, True)
            items.append(item)
        return ThriftList(etype, items), pos
    if ttype == BYTE:
        b = data[pos]
        return (b - 256 if b > 127 else b), pos + 1
    if ttype == DOUBLE:
        if pos + 8 > len(data):
            raise ThriftError("truncated thrift struct")
        return struct.unpack_from("<d", data, pos)[0], pos + 8
    if ttype == MAP:
        size, pos = _get_varint(data, pos)
        out = {}
        if size:
            kinds = data[pos]
            pos += 1
            for _ in range(size):
                key, pos = _read(data, pos, kinds >> 4, True)
                out[key], pos = _read(data, pos, kinds & 0x0F, True)
        return out, pos
    raise ThriftError(f"unknown thrift compact type {ttype}")


def _read_struct(data: bytes, pos: int) -> tuple[Struct, int]:
    fields = {}
    last = 0
    while True:
        head = data[pos]
        pos += 1
        ttype = head & 0x0F
        if ttype == STOP:
            return Struct(fields), pos
        if head >> 4:
            fid = last + (head >> 4)
        else:
            n, pos = _get_varint(data, pos)
            fid = (n >> 1) ^ -(n & 1)
        value, pos = _read(data, pos, ttype)
        fields[fid] = (TRUE if ttype == FALSE else ttype, value)
        last = fid


def decode(data, pos: int = 0) -> tuple[Struct, int]:
    """The struct at ``pos`` of ``data`` and the position just past it."""
    data = bytes(data) if not isinstance(data, bytes) else data
    try:
        return _read_struct(data, pos)
    except IndexError:
        raise ThriftError("truncated thrift struct") from None


# -- writing ---------------------------------------------------------------------------


def _varint(n: int, out: bytearray) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _value(ttype: int, value, out: bytearray, in_list: bool = False) -> None:
    if ttype in _INTS:
        n = (value << 1) ^ (value >> 63)
        if n < 0x80:
            out.append(n)
        else:
            _varint(n, out)
    elif ttype == BINARY:
        data = value.encode() if isinstance(value, str) else value
        _varint(len(data), out)
        out += data
    elif ttype == STRUCT:
        _struct(value, out)
    elif ttype in (TRUE, FALSE):
        if in_list:
            out.append(1 if value else 2)
        # in a struct the value is the field header's type
    elif ttype in (LIST, SET):
        size = len(value.items)
        if size < 15:
            out.append(size << 4 | value.etype)
        else:
            out.append(0xF0 | value.etype)
            _varint(size, out)
        for item in value.items:
            _value(value.etype, item, out, True)
    elif ttype == BYTE:
        out.append(value & 0xFF)
    elif ttype == DOUBLE:
        out += struct.pack("<d", value)
    elif ttype == MAP:
        raise ThriftError("writing thrift maps is not supported (Parquet has none)")
    else:
        raise ThriftError(f"unknown thrift compact type {ttype}")


def _struct(value: Struct, out: bytearray) -> None:
    last = 0
    fields = value.fields
    for fid in sorted(fields):
        ttype, item = fields[fid]
        if ttype == TRUE:
            ttype = TRUE if item else FALSE
        if 0 < fid - last <= 15:
            out.append((fid - last) << 4 | ttype)
        else:
            out.append(ttype)
            _varint((fid << 1) ^ (fid >> 63), out)
        if ttype not in (TRUE, FALSE):
            _value(ttype, item, out)
        last = fid
    out.append(STOP)


def encode(value: Struct) -> bytes:
    """``value`` in the compact protocol."""
    out = bytearray()
    _struct(value, out)
    return bytes(out)
