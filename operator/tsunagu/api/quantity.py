"""Kubernetes resource quantities ("8", "8000m", "1.5Gi", "2k", "1e3", ".5") as exact numbers.

The grammar is apimachinery's `resource.Quantity`: a signed decimal number, then an optional
binary suffix (Ki … Ei), decimal suffix (n, u, m, "", k, M … E) or decimal exponent (e3, E-2).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_PATTERN = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<exponent>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)

_SUFFIX_FACTORS: dict[str, Decimal] = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: object) -> Decimal:
    """The exact value of a quantity; ValueError with a short reason when it is not one."""
    if isinstance(value, bool):
        raise ValueError('must be a quantity such as 8 or "8"')
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValueError("must be a finite quantity") from None
    if not isinstance(value, str):
        raise ValueError('must be a quantity such as 8 or "8"')
    match = _PATTERN.match(value.strip())
    if match is None:
        raise ValueError(f"is not a valid quantity: {value!r}")
    number = Decimal(match["number"])
    exponent, suffix = match["exponent"], match["suffix"]
    if exponent is not None:
        number = number.scaleb(int(exponent[1:]))
    elif suffix is not None:
        number *= _SUFFIX_FACTORS[suffix]
    return number


def parse_device_count(value: object) -> int:
    """A count of devices (extended resources such as GPUs must be whole numbers)."""
    number = parse_quantity(value)
    if not number.is_finite() or number < 0 or number != number.to_integral_value():
        raise ValueError(f"must be a whole number ≥ 0 of devices (got {value!r})")
    return int(number)


# Resources kube-scheduler keeps in milli-units; every other one is counted in whole units.
MILLI_RESOURCES = frozenset({"cpu"})
# Resources of the Kubernetes core whose amounts may be fractional quantities (rounded up).
_NATIVE_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage", "pods"})


def _is_extended(resource: str) -> bool:
    """Extended resources (nvidia.com/gpu, example.com/foo) must be requested in whole units."""
    if resource in _NATIVE_RESOURCES or resource.startswith(("hugepages-", "requests.")):
        return False
    return "/" in resource and not resource.startswith("kubernetes.io/")


def resource_amount(resource: str, value: object) -> int:
    """A quantity of `resource` as kube-scheduler counts it: milli-CPUs, or whole units.

    apimachinery rounds up (`Quantity.MilliValue` / `Value`), so "0.5m" CPU is 1 milli-CPU and
    "1.5" bytes is 2. A negative amount, or a fractional one of an extended resource, is refused
    as the API server refuses it.
    """
    number = parse_quantity(value)
    if not number.is_finite() or number < 0:
        raise ValueError(f"must be a quantity ≥ 0 (got {value!r})")
    if resource in MILLI_RESOURCES:
        number = number.scaleb(3)
    elif _is_extended(resource) and number != number.to_integral_value():
        raise ValueError(f"must be a whole number of {resource} (got {value!r})")
    return int(number.to_integral_value(rounding=ROUND_CEILING))
