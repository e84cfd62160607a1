"""Records the non-finite golden cases in this folder (format ``optjit-golden/1``).

Every built-in optimizer runs a few float32 steps on the CPU with ``inf``, ``-inf`` and ``nan``
in its parameters and gradients, mixed with finite elements; what the library does with them
(the parameters after every step and the final state) is written down as it came out. The
PyTorch built-ins are recorded from ``torch.optim`` (the single-tensor path, PyTorch's CPU
default), Lion, LAMB and LARS from optax. Nothing here is computed by hand.

Run from the repository root, in a virtual environment that has ``torch==2.15.0`` and
``optax`` (with ``jax``) installed::

    OMP_WAIT_POLICY=passive python tests/golden/nonfinite/gen.py

It rewrites every ``*.json`` file of this folder; ``--check`` instead reports the files whose
content would change (and exits with status 1 if any would).
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

NAN, INF = float("nan"), float("inf")
HERE = Path(__file__).resolve().parent
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}

# The tensors every case steps: a vector whose parameters hold inf, -inf and nan; a matrix whose
# gradients do (-inf, a row of inf, then nan, then -inf); a vector whose first gradient is
# `[inf, 0.1, 0.2, ...]` (Adafactor's example) and whose last one holds a -inf (a moment's
# lerp then shows which of torch.lerp's two forms ran); a vector with an infinite parameter but
# no NaN (per-tensor norms are infinite, not NaN: LAMB, LARS, Adafactor); and a vector that
# stays finite throughout.
SHAPES = [[6], [2, 3], [4], [3], [2]]


def finite_values(generator, n):
    """`n` float32 values, roughly standard normal, from `generator`."""
    return torch.randn(n, generator=generator, dtype=torch.float32).tolist()


def make_data(steps, seed):
    """The initial parameters and the gradients of each step, as lists of float32 values."""
    gen = torch.Generator().manual_seed(seed)
    init = [finite_values(gen, math.prod(s)) for s in SHAPES]
    init[0][0], init[0][1], init[0][2] = INF, -INF, NAN
    init[3][1] = INF
    grads = []
    for k in range(steps):
        step = [finite_values(gen, math.prod(s)) for s in SHAPES]
        if k == 0:
            step[2][:3] = [INF, 0.1, 0.2]
            step[1][0] = -INF
        if k == 1:
            step[1][3:6] = [INF, INF, INF]
            step[0][4] = NAN
        if k == 2:
            step[1][1] = NAN
            step[0][5] = INF
        if k == 3:
            step[1][2] = -INF
            step[2][3] = NAN
        if k == steps - 1:
            step[2][1] = -INF
        grads.append(step)
    return init, grads


def encode(x):
    """A float as JSON: the number itself (exact for float32), or its name when not finite."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


def encode_all(value):
    """`encode` through nested lists."""
    if isinstance(value, list):
        return [encode_all(v) for v in value]
    return encode(value)


def flat(t):
    """A tensor's values, row-major, as Python floats."""
    return t.detach().reshape(-1).tolist()


# name: (torch class, keyword arguments, hyperparameters recorded per step besides lr)
TORCH_CASES = {
    "sgd": ("SGD", {"lr": 0.1}, ["momentum"]),
    "sgd-momentum-wd": (
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        ["momentum"],
    ),
    "sgd-nesterov-maximize": (
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True},
        ["momentum"],
    ),
    "adam": ("Adam", {"lr": 0.001}, ["betas"]),
    "adam-l2-amsgrad": (
        "Adam",
        {"lr": 0.003, "weight_decay": 0.05, "amsgrad": True},
        ["betas"],
    ),
    "adam-low-beta1": ("Adam", {"lr": 0.01, "betas": [0.3, 0.9]}, ["betas"]),
    "adamw": ("AdamW", {"lr": 0.001}, ["betas"]),
    "adamw-clip": ("AdamW", {"lr": 0.001}, ["betas"]),
    "adamw-amsgrad-maximize": (
        "AdamW",
        {"lr": 0.002, "weight_decay": 0.0, "amsgrad": True, "maximize": True},
        ["betas"],
    ),
    "adagrad": (
        "Adagrad",
        {"lr": 0.05, "lr_decay": 0.001, "initial_accumulator_value": 0.1},
        [],
    ),
    "adagrad-wd-maximize": (
        "Adagrad",
        {"lr": 0.05, "weight_decay": 0.01, "maximize": True},
        [],
    ),
    "rmsprop": ("RMSprop", {"lr": 0.001, "alpha": 0.9}, ["momentum"]),
    "rmsprop-centered-momentum-wd": (
        "RMSprop",
        {
            "lr": 0.001,
            "alpha": 0.95,
            "centered": True,
            "momentum": 0.9,
            "weight_decay": 0.001,
        },
        ["momentum"],
    ),
    "rmsprop-centered-low-alpha": (
        "RMSprop",
        {"lr": 0.001, "alpha": 0.3, "centered": True},
        ["momentum"],
    ),
    "adadelta": ("Adadelta", {"lr": 1.0, "rho": 0.9}, []),
    "adadelta-wd-maximize": (
        "Adadelta",
        {"lr": 0.5, "weight_decay": 0.01, "maximize": True},
        [],
    ),
    "adamax": ("Adamax", {"lr": 0.002}, ["betas"]),
    "adamax-wd": ("Adamax", {"lr": 0.002, "weight_decay": 0.01}, ["betas"]),
    "nadam": ("NAdam", {"lr": 0.002}, ["betas"]),
    "nadam-decoupled-wd": (
        "NAdam",
        {"lr": 0.002, "weight_decay": 0.01, "decoupled_weight_decay": True},
        ["betas"],
    ),
    "nadam-l2": ("NAdam", {"lr": 0.002, "weight_decay": 0.01}, ["betas"]),
    "radam": ("RAdam", {"lr": 0.001}, ["betas"]),
    "radam-decoupled-wd": (
        "RAdam",
        {"lr": 0.001, "weight_decay": 0.01, "decoupled_weight_decay": True},
        ["betas"],
    ),
    "radam-l2": ("RAdam", {"lr": 0.001, "weight_decay": 0.01}, ["betas"]),
    "rprop": ("Rprop", {"lr": 0.01}, []),
    "rprop-maximize": ("Rprop", {"lr": 0.02, "maximize": True}, []),
    "asgd": ("ASGD", {"lr": 0.01, "t0": 2.0}, []),
    "asgd-wd": ("ASGD", {"lr": 0.01, "t0": 3.0, "weight_decay": 0.01}, []),
    "adafactor": ("Adafactor", {"lr": 0.01}, []),
    "adafactor-wd-maximize": (
        "Adafactor",
        {"lr": 0.01, "weight_decay": 0.01, "maximize": True},
        [],
    ),
}

# Cases that clip the gradients first (`clip_grad_norm_`, L2, over every tensor): max_norm.
CLIPPED = {"adamw-clip": 1.0}

# Steps per case: RAdam rectifies from step 6 on (with beta2 = 0.999), so it runs 7.
STEPS = 5
RADAM_STEPS = 7


def torch_kwargs(kwargs):
    """The JSON kwargs as PyTorch takes them (pairs as tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


# The states PyTorch keeps as one-element tensors and the format writes as plain numbers.
SCALAR_STATES = {("ASGD", "eta"), ("ASGD", "mu"), ("NAdam", "mu_product")}


def torch_state(name, state):
    """One parameter's state under PyTorch's names: per-element buffers flattened, the scalar
    tensors ASGD and NAdam keep as numbers, `step` left out."""
    out = {}
    for key, value in state.items():
        if key == "step":
            continue
        if not torch.is_tensor(value):
            value = torch.tensor(value)
        if (name, key) in SCALAR_STATES:
            out[key] = encode(value.item())
        else:
            out[key] = encode_all(flat(value))
    return out


def record_torch(case, class_name, kwargs, recorded):
    """Runs `torch.optim.<class_name>` on the case's data."""
    steps = RADAM_STEPS if class_name == "RAdam" else STEPS
    init, grads = make_data(steps, seed=sum(map(ord, case)))
    params = [
        torch.tensor(values, dtype=torch.float32).reshape(shape).requires_grad_()
        for values, shape in zip(init, SHAPES)
    ]
    optimizer = getattr(torch.optim, class_name)(
        params, **torch_kwargs(kwargs), foreach=False
    )
    max_norm = CLIPPED.get(case)
    expected = []
    for step in grads:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g, dtype=torch.float32).reshape(p.shape)
        record = {}
        if max_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
            record["grad_norm"] = encode(norm.item())
        group = optimizer.param_groups[0]
        hyper = {"lr": group["lr"]}
        for key in recorded:
            value = group[key]
            hyper[key] = list(value) if isinstance(value, tuple) else value
        optimizer.step()
        record["params"] = [encode_all(flat(p)) for p in params]
        record["hyper"] = [hyper]
        expected.append(record)
    final_state = [torch_state(class_name, optimizer.state[p]) for p in params]
    return {
        "format": "optjit-golden/1",
        "name": case,
        "reference": f"torch {torch.__version__} torch.optim.{class_name}",
        "optimizer": {"name": class_name, "kwargs": kwargs},
        "param_groups": None,
        "schedule": None,
        "metrics": None,
        "clip_grad_norm": None if max_norm is None else {"max_norm": max_norm},
        "shapes": SHAPES,
        "init": encode_all(init),
        "grads": encode_all(grads),
        "expected": expected,
        "final_state": final_state,
        "tolerance": TOLERANCE,
    }


# name: (optjit name, JSON kwargs, optax keyword arguments, {optax state field: optjit name})
OPTAX_CASES = {
    "lion": (
        "Lion",
        {"lr": 0.001, "betas": [0.9, 0.99], "weight_decay": 0.1},
        {"learning_rate": 0.001, "b1": 0.9, "b2": 0.99, "weight_decay": 0.1},
        {"mu": "exp_avg"},
    ),
    "lion-no-decay": (
        "Lion",
        {"lr": 0.001, "betas": [0.9, 0.99], "weight_decay": 0.0},
        {"learning_rate": 0.001, "b1": 0.9, "b2": 0.99, "weight_decay": 0.0},
        {"mu": "exp_avg"},
    ),
    "lamb": (
        "LAMB",
        {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01},
        {
            "learning_rate": 0.01,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-6,
            "weight_decay": 0.01,
        },
        {"mu": "exp_avg", "nu": "exp_avg_sq"},
    ),
    "lamb-no-decay": (
        "LAMB",
        {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.0},
        {
            "learning_rate": 0.01,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-6,
            "weight_decay": 0.0,
        },
        {"mu": "exp_avg", "nu": "exp_avg_sq"},
    ),
    "lars": (
        "LARS",
        {
            "lr": 0.1,
            "weight_decay": 0.0001,
            "trust_coefficient": 0.001,
            "eps": 0.0,
            "momentum": 0.9,
            "nesterov": False,
        },
        {
            "learning_rate": 0.1,
            "weight_decay": 0.0001,
            "trust_coefficient": 0.001,
            "eps": 0.0,
            "momentum": 0.9,
            "nesterov": False,
        },
        {"trace": "trace"},
    ),
    "lars-no-decay-nesterov": (
        "LARS",
        {"lr": 0.1, "weight_decay": 0.0, "momentum": 0.9, "nesterov": True},
        {"learning_rate": 0.1, "weight_decay": 0.0, "momentum": 0.9, "nesterov": True},
        {"trace": "trace"},
    ),
}


def optax_states(state, names):
    """The per-element states in an optax state tree, by optjit's name: each field of `names`
    found on a named tuple in the tree, one list per tensor."""
    found = {}

    def walk(node):
        fields = getattr(node, "_fields", None)
        if fields is not None:
            for field in fields:
                if field in names:
                    found[names[field]] = getattr(node, field)
        if isinstance(node, (tuple, list)):
            for child in node:
                walk(child)

    walk(state)
    missing = set(names.values()) - set(found)
    if missing:
        raise SystemExit(f"optax state has no {sorted(missing)}")
    return found


def record_optax(case, name, kwargs, optax_kwargs, state_names):
    """Runs `optax.<name.lower()>` on the case's data (float32, the CPU)."""
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_platforms", "cpu")
    init, grads = make_data(STEPS, seed=sum(map(ord, case)))
    params = [
        jnp.asarray(values, dtype=jnp.float32).reshape(shape)
        for values, shape in zip(init, SHAPES)
    ]
    optimizer = getattr(optax, name.lower())(**optax_kwargs)
    state = optimizer.init(params)
    expected = []
    for step in grads:
        g = [
            jnp.asarray(values, dtype=jnp.float32).reshape(shape)
            for values, shape in zip(step, SHAPES)
        ]
        updates, state = optimizer.update(g, state, params)
        params = optax.apply_updates(params, updates)
        expected.append(
            {
                "params": [encode_all(p.reshape(-1).tolist()) for p in params],
                "hyper": [{"lr": kwargs["lr"]}],
            }
        )
    states = optax_states(state, state_names)
    final_state = [
        {
            key: encode_all(values[t].reshape(-1).tolist())
            for key, values in states.items()
        }
        for t in range(len(SHAPES))
    ]
    return {
        "format": "optjit-golden/1",
        "name": case,
        "reference": f"optax {optax.__version__} optax.{name.lower()} (jax {jax.__version__})",
        "optimizer": {"name": name, "kwargs": kwargs},
        "param_groups": None,
        "schedule": None,
        "metrics": None,
        "clip_grad_norm": None,
        "shapes": SHAPES,
        "init": encode_all(init),
        "grads": encode_all(grads),
        "expected": expected,
        "final_state": final_state,
        "tolerance": TOLERANCE,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="report files that would change"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = {}
    for case, (class_name, kwargs, recorded) in TORCH_CASES.items():
        cases[case] = record_torch(case, class_name, kwargs, recorded)
    for case, (name, kwargs, optax_kwargs, names) in OPTAX_CASES.items():
        cases[case] = record_optax(case, name, kwargs, optax_kwargs, names)
    changed = []
    for case, content in cases.items():
        text = json.dumps(content, separators=(",", ":"), allow_nan=False) + "\n"
        path = HERE / f"{case}.json"
        if path.exists() and path.read_text() == text:
            continue
        changed.append(path.name)
        if not args.check:
            path.write_text(text)
    for name in changed:
        print(("would change " if args.check else "wrote ") + name)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    sys.exit(main())
