import msgpack
from hypothesis import given
from hypothesis import strategies as st

from supplyflow.codecs.packing import BIG_INT_EXT, pack, unpack

_values = st.recursive(
    st.integers() | st.text(max_size=5) | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


@given(_values)
def test_any_state_round_trips_whatever_the_size_of_its_integers(value: object) -> None:
    assert unpack(pack(value)) == value


def test_integers_msgpack_holds_are_packed_as_msgpack_packs_them() -> None:
    state = ["SKU-1", "DC1", [2**63 - 1, -(2**63), 2**64 - 1, 0, 5], {"po:1": 17}]
    assert pack(state) == msgpack.packb(state, use_bin_type=True)


def test_a_sum_beyond_64_bits_is_an_extension_value() -> None:
    total = -(10**21) - 7  # ~9,300 maximal negative adjustments summed (thousandths)
    packed = pack([total])
    assert msgpack.unpackb(packed, raw=False).__repr__().startswith("[ExtType(code=1")
    assert unpack(packed) == [total]
    assert BIG_INT_EXT == 1
