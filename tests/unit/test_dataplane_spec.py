"""Services in the config: the SNAT rules of service_errors() (docs/snat.md)."""

import pytest

from hacluster.dataplane.spec import ServiceSpec, service_errors

VIPS = {"10.0.0.100", "10.0.1.100"}


def errors(**over) -> list[str]:
    svc = ServiceSpec.model_validate({"name": "web", "vip": "10.0.0.100", "port": 80,
                                      "backends": [{"node": "n1"}], **over})
    return service_errors([svc], {"n1"}, VIPS, set())


def test_snat_to_the_vip_by_default_or_to_a_floating_address():
    assert errors() == []
    assert errors(snat_address="10.0.1.100") == []
    assert errors(snat=False) == []
    assert ServiceSpec.model_validate({"name": "w", "vip": "10.0.0.100", "port": 80,
                                       "backends": [{"node": "n1"}]}).snat_address is None


@pytest.mark.parametrize("over, words", [
    ({"snat": False, "snat_address": "10.0.1.100"}, "set with `snat: false`"),
    ({"snat_address": "10.0.2.7"}, "10.0.2.7 is not one of the configured vips (10.0.0.100, 10.0.1.100)"),
    ({"snat_address": "fd00::1"}, "must be an IPv4 address, got 'fd00::1'"),
    ({"snat_address": "gateway"}, "must be an IPv4 address, got 'gateway'"),
])
def test_a_bad_snat_address_is_named_with_its_fix(over, words):
    (err,) = errors(**over)
    assert err.startswith("services[0].snat_address: ") and words in err, err
