"""The dictionary transforms mirror the array ones: signatures, defaults, docs, numbers."""

import inspect
import re

import numpy as np
import pytest
import torch

import monai_flow.transforms.dictionary as dictionary
from monai_flow.transforms import (
    LowDoseCTNoise,
    LowDoseCTNoised,
    LowDoseCTNoiseD,
    LowDoseCTNoiseDict,
    RandLowDoseCTNoise,
    RandLowDoseCTNoised,
    RandLowDoseCTNoiseD,
    RandLowDoseCTNoiseDict,
    RandRicianMRNoise,
    RandRicianMRNoised,
    RandRicianMRNoiseD,
    RandRicianMRNoiseDict,
    RicianMRNoise,
    RicianMRNoised,
    RicianMRNoiseD,
    RicianMRNoiseDict,
)

# dictionary class -> (array class it wraps, fixed-level class that receives the array class's **kwargs)
PAIRS = {
    LowDoseCTNoised: (LowDoseCTNoise, None),
    RandLowDoseCTNoised: (RandLowDoseCTNoise, LowDoseCTNoise),
    RicianMRNoised: (RicianMRNoise, None),
    RandRicianMRNoised: (RandRicianMRNoise, RicianMRNoise),
}
RANDOM = (RandLowDoseCTNoised, RandRicianMRNoised)
CT_KW = {"domain": "image", "spacing": (1.0, 1.0)}  # fast: no projector


def array_parameters(array_cls, kwargs_target) -> dict[str, inspect.Parameter]:
    """Parameters of ``array_cls.__init__``, with its ``**kwargs`` expanded to those of ``kwargs_target``."""
    params = dict(inspect.signature(array_cls).parameters)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        assert kwargs_target is not None, f"{array_cls.__name__} forwards **kwargs: name where they go in PAIRS"
        params = {n: p for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
        for name, p in inspect.signature(kwargs_target).parameters.items():
            params.setdefault(name, p)  # the Rand class's own default (e.g. a range) wins
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
    return params


def documented_args(cls) -> list[str]:
    """Names listed in the ``Args:`` section of the class docstring."""
    doc = inspect.getdoc(cls)
    assert doc is not None and "Args:" in doc
    section = doc.split("Args:", 1)[1]
    return re.findall(r"^    (\w+):", section, flags=re.MULTILINE)


@pytest.mark.parametrize("dict_cls", list(PAIRS), ids=lambda c: c.__name__)
def test_signature_mirrors_the_array_defaults(dict_cls):
    array_params = array_parameters(*PAIRS[dict_cls])
    sig = inspect.signature(dict_cls).parameters
    for name, p in array_params.items():
        assert name in sig, f"{dict_cls.__name__} lacks {name!r} of {PAIRS[dict_cls][0].__name__}"
        assert sig[name].default is not inspect.Parameter.empty, f"{dict_cls.__name__}({name}) has no default"
        assert sig[name].default == p.default and type(sig[name].default) is type(p.default), (
            f"{dict_cls.__name__}({name}={sig[name].default!r}) but the array default is {p.default!r}"
        )
    # nothing else, and nothing hidden behind **kwargs
    assert set(sig) == set(array_params) | {"keys", "allow_missing_keys"}
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.values())
    assert list(sig)[0] == "keys" and list(sig)[-1] == "allow_missing_keys"
    assert sig["allow_missing_keys"].default is False
    if dict_cls in RANDOM:
        assert list(sig)[1] == "prob"


@pytest.mark.parametrize("dict_cls", list(PAIRS), ids=lambda c: c.__name__)
def test_every_parameter_is_documented(dict_cls):
    doc = inspect.getdoc(dict_cls)
    names = list(inspect.signature(dict_cls).parameters)
    for name in names:
        assert name in doc, f"{name!r} is not in the docstring of {dict_cls.__name__}"
    assert set(documented_args(dict_cls)) == set(names)


@pytest.mark.parametrize("dict_cls", list(PAIRS), ids=lambda c: c.__name__)
def test_every_parameter_reaches_the_array_transform(dict_cls, monkeypatch):
    """Each dictionary argument is handed, unchanged, to the array constructor."""
    array_cls, kwargs_target = PAIRS[dict_cls]
    calls = []

    class Recorder:
        backend = array_cls.backend

        def __init__(self, *args, **kwargs):
            bound = inspect.signature(array_cls).bind(*args, **kwargs)
            received = {n: v for n, v in bound.arguments.items() if n != "kwargs"}
            received.update(bound.arguments.get("kwargs", {}))
            calls.append(received)

    monkeypatch.setattr(dictionary, array_cls.__name__, Recorder)
    names = [n for n in array_parameters(array_cls, kwargs_target) if n != "prob"]
    values = {n: object() for n in names}
    t = dict_cls("img", **values)
    assert len(calls) == 1
    received = calls[0]
    for n in names:
        assert received.get(n) is values[n], f"{dict_cls.__name__} does not forward {n!r}"
    if dict_cls in RANDOM:  # the dictionary draws do_transform itself; the array one must always apply
        assert received.get("prob") == 1.0
        assert set(received) == set(names) | {"prob"}
    assert t.backend == array_cls.backend


@pytest.mark.parametrize("dict_cls", list(PAIRS), ids=lambda c: c.__name__)
def test_backend_and_aliases(dict_cls):
    assert dict_cls.backend == PAIRS[dict_cls][0].backend
    kw = CT_KW if "CT" in dict_cls.__name__ else {}
    assert dict_cls("img", **kw).backend == PAIRS[dict_cls][0].backend
    base = dict_cls.__name__[:-1]
    assert getattr(dictionary, base + "D") is dict_cls and getattr(dictionary, base + "Dict") is dict_cls


@pytest.mark.parametrize("dict_cls", list(PAIRS), ids=lambda c: c.__name__)
def test_unknown_or_positional_arguments_raise_at_construction(dict_cls):
    """Before, ``**kwargs`` went to the array constructor, which also raised TypeError, but named
    the array class (``LowDoseCTNoise.__init__() got an unexpected keyword argument``); now the
    dictionary class refuses it itself."""
    with pytest.raises(TypeError, match=rf"{dict_cls.__name__}.*unexpected keyword argument 'dose'"):
        dict_cls("img", dose=0.5)
    # before, the argument after keys (after prob for the random ones) was allow_missing_keys;
    # it is refused rather than silently taken as a noise level
    positional = ("img", 1.0, True) if dict_cls in RANDOM else ("img", True)
    with pytest.raises(TypeError, match="positional"):
        dict_cls(*positional)


def ct_image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return -1000.0 + 1000.0 * (torch.rand(1, 32, 32, generator=g) > 0.3)  # air and water, HU


def mr_image() -> torch.Tensor:
    return torch.linspace(0.0, 100.0, 32 * 32).reshape(1, 32, 32)


CASES = [
    pytest.param(LowDoseCTNoised, LowDoseCTNoise, {**CT_KW, "dose_fraction": 0.3}, ct_image, id="ct"),
    pytest.param(RandLowDoseCTNoised, RandLowDoseCTNoise, {**CT_KW, "dose_fraction": (0.2, 0.6)}, ct_image, id="rand_ct"),
    pytest.param(RicianMRNoised, RicianMRNoise, {"std": 0.05, "num_coils": 4}, mr_image, id="mr"),
    pytest.param(RandRicianMRNoised, RandRicianMRNoise, {"std": (0.02, 0.08)}, mr_image, id="rand_mr"),
]


@pytest.mark.parametrize("dict_cls, array_cls, kwargs, image", CASES)
@pytest.mark.parametrize("seed", [0, 123])
def test_dictionary_and_array_give_identical_output(dict_cls, array_cls, kwargs, image, seed):
    img = image()
    d = dict_cls("img", **kwargs).set_random_state(seed)
    a = array_cls(**kwargs).set_random_state(seed)
    for _ in range(2):  # the states advance the same way
        out_d, out_a = d({"img": img})["img"], a(img)
        assert torch.equal(out_d, out_a)
        assert not torch.equal(out_d, img)
    # numpy in, numpy out, same numbers
    out_np = dict_cls("img", **kwargs).set_random_state(seed)({"img": img.numpy()})["img"]
    assert isinstance(out_np, np.ndarray)
    np.testing.assert_array_equal(out_np, array_cls(**kwargs).set_random_state(seed)(img).numpy())


@pytest.mark.parametrize(
    "dict_cls, fixed_cls, kwargs, image",
    [
        pytest.param(RandLowDoseCTNoised, LowDoseCTNoise, {**CT_KW, "dose_fraction": (0.1, 0.9)}, ct_image, id="ct"),
        pytest.param(RandRicianMRNoised, RicianMRNoise, {"std": (0.01, 0.09)}, mr_image, id="mr"),
    ],
)
def test_two_keys_share_the_level_but_not_the_noise(dict_cls, fixed_cls, kwargs, image):
    """Documented seeding: per call, ``do_transform`` then one level then one seed per key, from ``self.R``."""
    img = image()
    seed = 5
    out = dict_cls(["a", "b"], **kwargs).set_random_state(seed)({"a": img, "b": img.clone()})
    assert not torch.equal(out["a"], out["b"])  # independent noise
    r = np.random.RandomState(seed)
    r.rand()  # do_transform
    level_name, (low, high) = ("dose_fraction" if fixed_cls is LowDoseCTNoise else "std"), kwargs.get(
        "dose_fraction", kwargs.get("std")
    )
    level = r.uniform(low, high)
    seeds = [r.randint(2**31) for _ in "ab"]
    fixed = fixed_cls(**{k: v for k, v in kwargs.items() if k != level_name})
    for key, s in zip("ab", seeds):  # both keys at the same level, each with its own seed
        assert torch.equal(out[key], fixed(img, seed=s, **{level_name: level}))
    # and that level is the one the array transform draws for a single image
    single = dict_cls("a", **kwargs).set_random_state(seed)({"a": img})["a"]
    assert torch.equal(single, out["a"])


@pytest.mark.parametrize("dict_cls, kwargs", [(RandLowDoseCTNoised, CT_KW), (RandRicianMRNoised, {})])
def test_prob_zero_leaves_the_data(dict_cls, kwargs):
    data = {"a": torch.full((1, 8, 8), 40.0)}
    out = dict_cls("a", prob=0.0, **kwargs)(data)
    assert out["a"] is data["a"]


def test_fixed_level_keys_get_independent_noise():
    img = mr_image()
    out = RicianMRNoised(["a", "b"], std=0.05).set_random_state(1)({"a": img, "b": img})
    assert not torch.equal(out["a"], out["b"])
    r = np.random.RandomState(1)
    for key in "ab":
        assert torch.equal(out[key], RicianMRNoise(std=0.05)(img, seed=r.randint(2**31)))


def test_ct_defaults_are_the_scans_in_one_place():
    """The CT transforms and the degradation operator repeat CTScan's defaults (validated there, once):
    every parameter they share with CTScan has CTScan's default, so a scanner default changes in one place."""
    import dataclasses

    from monai_flow.physics import CTScan
    from monai_flow.transforms import CTDegradation

    fields = {f.name: f.default for f in dataclasses.fields(CTScan)}
    for cls in (LowDoseCTNoise, LowDoseCTNoised, RandLowDoseCTNoised, CTDegradation):
        params = inspect.signature(cls).parameters
        shared = set(params) & set(fields)
        assert len(shared) >= 16, (cls.__name__, sorted(set(fields) - shared))
        for name in shared:
            if cls is CTDegradation and name == "i0":
                continue  # also accepts "estimate"
            assert params[name].default == fields[name], (cls.__name__, name, params[name].default, fields[name])
