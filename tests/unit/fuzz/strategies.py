"""Mutations of real messages: the fuzzers start from what the peers really send."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], max_edits: int = 4) -> bytes:
    """One of ``seeds`` with a few byte-level edits: flips, overwrites, insertions,
    deletions, a cut, or a slice repeated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, max_edits))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "repeat"]))
        if edit == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "set":
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0x81, 0x82, 0xFF]))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif edit == "cut":
            del data[at:]
        else:
            end = min(len(data), at + draw(st.integers(1, 16)))
            data[at:at] = data[at:end] * draw(st.integers(1, 4))
    return bytes(data)


#: texts a hostile or careless sender puts where a timestamp or number belongs
EDGE_TEXTS = st.sampled_from(
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T24:00:00",
        "0000-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-03-29T02:30:00",
        "2026-10-25T02:30:00",
        "1e999999",
        "-0",
        "NaN",
        "Infinity",
        "1" * 400,
        "0." + "0" * 300 + "1",
        "",
        " ",
        "\u00a0",
        "\ufeff1",
        "\uff11\uff12\uff13",  # full-width digits
    ]
)
odd_texts = st.one_of(
    EDGE_TEXTS,
    EDGE_TEXTS,
    st.text(max_size=40),
    st.datetimes().map(lambda d: d.isoformat()),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)
