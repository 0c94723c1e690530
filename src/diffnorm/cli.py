"""The ``diffnorm`` command line (typer + rich)."""

from __future__ import annotations

import contextlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from diffnorm import __version__
from diffnorm.subgrid import EXACT_BASINS, EXACT_FOLD_ROWS, EXACT_ROUNDS

app = typer.Typer(
    help="Normalization coefficients γ of diffusion-based correlation operators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


class MethodName(StrEnum):
    selinv = "selinv"
    brute = "brute"
    probing = "probing"
    randomization = "randomization"
    analytic = "analytic"
    lattice = "lattice"
    images = "images"
    walk = "walk"
    cnn = "cnn"


class Backend(StrEnum):
    sparse = "sparse"
    torch = "torch"


# grid: the random length scales' defaults (shown in --help, applied when not typed)
RANDOM_D = {"d_min": 1.5, "d_max": 4.0, "anisotropy": 3.0, "correlation": 10.0, "seed": 0}
LATLON_RESOLUTION = 4.0


class GridName(StrEnum):
    toy = "toy"
    orca1 = "orca1"
    latlon = "latlon"
    mesh = "mesh"


EVALUATION_HINT = "`diffnorm evaluate -m MODEL -d DATA --out DIR` writes DIR/evaluation.json"


@contextlib.contextmanager
def user_errors():
    """Turn the library's input errors into one red line and exit status 2; warnings (a model
    used outside its trained range) are shown in yellow."""
    import warnings

    from diffnorm.fields import FieldsError
    from diffnorm.methods import ProbingCertificateError, SelinvCertificateError

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # when raised, not at the end: advice (a slow backend) must come before the wait
        if category.__module__.startswith("diffnorm"):
            console.print(f"[yellow]warning:[/] {message}")
        else:
            shown(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            yield
    except (
        FieldsError,
        ValueError,
        TypeError,
        ProbingCertificateError,
        SelinvCertificateError,
        OSError,
    ) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from None


def usage_error(message: str) -> None:
    """Options that do not go together: the same one red line and exit status 2."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@contextlib.contextmanager
def progress_bars(enabled: bool = True):
    """``factory(label) -> progress(done, total)`` backed by rich bars with ETA."""
    if not enabled:
        yield lambda _label: None
        return
    bars = Progress(
        TextColumn("{task.description:<26}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )

    def factory(label: str):
        task = bars.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bars.update(task, completed=done, total=total)

        return update

    with bars:
        yield factory


def doubt_line(result, fields) -> str:
    """The cnn's error estimate in one line: the cells it doubts, and what solves them."""
    info = result.info
    if info.get("exact_basins_only"):
        return (
            f"every basin is within --exact-basins {result.options['exact_basins']} cells: "
            "all solved exactly, the network not run (--exact-basins 0 runs it)"
        )
    exact_above = info.get("exact_above")  # the τ used (with "auto", the model's)
    whole = info.get("exact_above_cells") and info["exact_cells"] == fields.n_ocean
    if exact_above is not None and whole:
        return (
            f"--exact-above {exact_above:g}: every cell solved exactly (the doubted cells' "
            "halos held most of the ocean; selinv alone is cheaper on such a grid)"
        )
    if exact_above is not None:
        line = (
            f"--exact-above {exact_above:g}: {info['exact_above_cells']} cells solved exactly "
            f"in {info['exact_above_rounds']} round(s)"
        )
        left = info["exact_above_left"]
        if left:
            return line + f"; {left} cells the network serves still have an estimate above it"
        return line + "; every cell the network serves has its estimate at or below it"
    tau = info["suggested_exact_above"]  # set with the error estimate
    whose = (
        "the model's τ"
        if info.get("exact_above_calibrated")
        else "the package's τ: this model's calibration predates its own"
    )
    est = result.error_estimate[fields.counted & ~result.exact]  # the cells it serves
    doubted = int((~(est <= tau)).sum())  # no estimate counts as doubt
    line = (
        f"error estimate ({info['error_quantile']:.0%} quantile of |ε| per kind of cell, or the "
        f"network's error measured beside, if larger): above {tau:.2%} ({whose}), or "
        f"none, on {doubted} of the {est.size} cells the network serves"
    )
    if doubted:
        line += " (--exact-above auto solves those exactly)"
    return line


def version_callback(value: bool) -> None:
    if value:
        out.print(f"diffnorm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = False,
) -> None:
    """diffnorm: exact, fast-exact, randomized, analytic and learned γ."""


@app.command()
def estimate(
    input: Annotated[Path, typer.Argument(help="fields file (NetCDF, DESIGN layout)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write fields + gamma")],
    method: Annotated[
        MethodName, typer.Option(help="how to compute γ (default: the fastest certified exact one)")
    ] = MethodName.selinv,
    samples: Annotated[
        int | None,
        typer.Option(help="randomization: number of samples N", show_default="1000"),
    ] = None,
    seed: Annotated[int, typer.Option(help="randomization, --verify: random seed")] = 0,
    tolerance: Annotated[
        float | None,
        typer.Option(help="selinv, probing: certified relative error on γ²", show_default="1e-06"),
    ] = None,
    stride: Annotated[
        int | None, typer.Option(help="probing: force this stride (else chosen and certified)")
    ] = None,
    backend: Annotated[Backend, typer.Option(help="linear algebra backend")] = Backend.sparse,
    model: Annotated[
        str | None,
        typer.Option(help="cnn: model file, checkpoint or shipped name (diffnorm models)"),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cnn: cpu, cuda or auto", show_default="auto")
    ] = None,
    tile: Annotated[
        int | None, typer.Option(help="cnn: predict in N×N-cell tiles, each with its halo (memory)")
    ] = None,
    symmetries: Annotated[
        int | None,
        typer.Option(
            help="cnn: average the network over this many of the grid's flips and turns (up "
            "to 8 closed, 4 periodic or folded): as many passes, smaller errors",
            show_default="1",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="cnn: float32, or bfloat16 (faster on CPUs with AMX or AVX-512 BF16 and on "
            "GPUs, slower elsewhere; mean error ~1 % larger)",
            show_default="float32",
        ),
    ] = None,
    exact_basins: Annotated[
        int | None,
        typer.Option(
            help="cnn: solve exactly every basin of at most this many cells (lakes, enclosed "
            "seas, a small regional domain; a grid of such basins alone without the network; "
            "0: the network everywhere)",
            show_default=str(EXACT_BASINS),
        ),
    ] = None,
    exact_fold_rows: Annotated[
        int | None,
        typer.Option(
            help="cnn: on a grid with a north fold, solve this many rows under it exactly (a "
            "band padded by a halo; 0: the network there too)",
            show_default=str(EXACT_FOLD_ROWS),
        ),
    ] = None,
    exact_above: Annotated[
        str | None,
        typer.Option(
            help="cnn: also solve exactly every cell whose error estimate is above this |ε| "
            "(auto: the model's calibrated τ, e.g. 0.0125): a sparse solve on those cells "
            "and their halos, keeping every cell "
            f"it determines, then on the cells whose estimate rose above it (up to {EXACT_ROUNDS} "
            "rounds)"
        ),
    ] = None,
    verify: Annotated[
        int,
        typer.Option(
            help="also compute exact γ at this many cells (half coastal) and report the "
            "method's measured error there (written as verify_* attributes)"
        ),
    ] = 0,
    nemo_layout: Annotated[
        bool,
        typer.Option(
            "--nemo-layout",
            help="write γ, with the method's error estimate and the cnn's domain flags, on the "
            "layout of the NEMO file the grid was read from (halo columns and ghost row "
            "restored as NEMO fills them)",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Compute γ for a fields file and write it (NaN on land) with the method's metadata."""
    from diffnorm.fields import check_output_path, read_fields, write_fields
    from diffnorm.methods import estimate as run_estimate

    options: dict = {}
    if method is MethodName.randomization:
        options = {"samples": 1000 if samples is None else samples, "seed": seed}
    elif method is MethodName.probing:
        options = {"tolerance": 1e-6 if tolerance is None else tolerance, "stride": stride}
    elif method is MethodName.selinv:
        options = {"tolerance": 1e-6 if tolerance is None else tolerance}
    if exact_above is not None:  # "auto" or a float from here on
        from diffnorm.methods.cnn import exact_above_value

        try:
            exact_above = exact_above_value(exact_above, "--exact-above")
        except ValueError as exc:
            usage_error(str(exc))
    # the cnn's options as typed (None: not typed; the method's own defaults then apply)
    cnn_given = {
        name: value
        for name, value in (
            ("model", model),
            ("device", device),
            ("tile", tile),
            ("symmetries", symmetries),
            ("precision", precision),
            ("exact_basins", exact_basins),
            ("exact_fold_rows", exact_fold_rows),
            ("exact_above", exact_above),
        )
        if value is not None
    }
    if method is MethodName.cnn:
        options = cnn_given
    # an option the method does not take is refused, not ignored: a user who forgot
    # --method cnn would otherwise read selinv's γ as the network's (typed at its default too)
    elif cnn_given:
        flag = "--" + next(iter(cnn_given)).replace("_", "-")
        usage_error(f"{flag} goes with --method cnn (got --method {method.value})")
    if samples is not None and method is not MethodName.randomization:
        usage_error(f"--samples goes with --method randomization (got --method {method.value})")
    if tolerance is not None and method not in (MethodName.selinv, MethodName.probing):
        usage_error(
            f"--tolerance goes with --method selinv or probing (got --method {method.value})"
        )
    from diffnorm.methods import METHODS

    if backend is not Backend.sparse and not METHODS[method.value].needs_operator:
        usage_error(
            f"--backend goes with the methods that solve with the operator (brute, probing, "
            f"randomization); --method {method.value} does not"
        )
    if exact_basins is not None and exact_basins < 0:
        usage_error(f"--exact-basins must be >= 0, got {exact_basins}")
    if exact_fold_rows is not None and exact_fold_rows < 0:
        usage_error(f"--exact-fold-rows must be >= 0, got {exact_fold_rows}")
    from diffnorm.ml.networks import PRECISIONS

    if precision is not None and precision not in PRECISIONS:
        usage_error(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if stride is not None and method is not MethodName.probing:
        usage_error("--stride goes with --method probing (selinv needs no stride)")
    with user_errors():
        check_output_path(output)  # before the work, not after it
        fields, _ = read_fields(input)
        if nemo_layout:
            from diffnorm.nemo import Layout

            Layout.from_attrs(fields.attrs, fields.topology)  # a grid not from NEMO: say so now
        with progress_bars(not quiet) as bars:
            result = run_estimate(
                fields,
                method.value,
                backend=backend.value,
                progress=bars(method.value),
                **options,
            )
        attrs = result.attrs()
        if verify:
            from diffnorm.verify import verify as run_verify

            checked = run_verify(
                fields,
                result.gamma,
                verify,
                seed=seed,
                estimate=result.error_estimate,
                # a method's estimate without a quantile is a bound (probing's certificate)
                quantile=float(result.info.get("error_quantile", 1.0)),
            )
            attrs.update(checked.summary())
        if nemo_layout:
            from diffnorm.nemo import write_nemo_gamma

            write_nemo_gamma(output, fields, result.gamma, attrs, result.variables())
        else:
            write_fields(output, fields, result.gamma, attrs=attrs, variables=result.variables())
    g = result.gamma[fields.mask]
    summary = f"{method.value}: γ in [{g.min() / 1e3:.4g}, {g.max() / 1e3:.4g}] km"
    summary += f" on {fields.n_ocean} ocean cells in {result.wall_time:.3g} s"
    if result.tolerance:
        summary += f", certified |ε| ≤ {result.tolerance:.1e}"
    console.print(summary)
    if method is MethodName.cnn and result.error_estimate is not None:
        console.print(doubt_line(result, fields))
    if verify:
        from diffnorm.verify import SPACING as VERIFY_SPACING

        s = checked.summary()
        line = (
            f"verified against exact γ at {s['verify_cells']} cells "
            + (
                f"of the {verify} asked (no more ocean cells are {VERIFY_SPACING} apart; "
                if s["verify_cells"] < verify
                else "("
            )
            + f"{s['verify_coastal_cells']} coastal): mean |ε| {s['verify_mean_abs']:.2e}, "
            f"max |ε| {s['verify_max_abs']:.2e}"
        )
        if "verify_coastal_max_abs" in s:
            line += f" (coastal max {s['verify_coastal_max_abs']:.2e})"
        if "verify_estimate_coverage" in s:
            line += (
                f"; its error estimate covers {100 * s['verify_estimate_coverage']:.0f} % of "
                f"{s['verify_estimate_cells']}"
            )
            if "verify_estimate_scale" in s:
                line += (
                    f" (scaled ×{s['verify_estimate_scale']:.2g}, it would cover exactly "
                    f"{100 * checked.quantile:.0f} % there)"
                )
        console.print(line)
    console.print(f"wrote {output}")


@app.command()
def grid(
    name: Annotated[GridName, typer.Argument(help="built-in grid, or 'mesh' with --mesh")],
    output: Annotated[Path, typer.Option("-o", "--output", help="fields file to write")],
    steps: Annotated[int, typer.Option(help="number M of implicit diffusion steps")] = 10,
    d_min: Annotated[
        float | None,
        typer.Option(
            help="smallest length scale D, in grid cells", show_default=str(RANDOM_D["d_min"])
        ),
    ] = None,
    d_max: Annotated[
        float | None,
        typer.Option(
            help="largest length scale D, in grid cells", show_default=str(RANDOM_D["d_max"])
        ),
    ] = None,
    constant: Annotated[
        float | None, typer.Option(help="one length scale D (cells) everywhere, isotropic")
    ] = None,
    anisotropy: Annotated[
        float | None,
        typer.Option(
            help="largest κ₁₁/κ₂₂ ratio (its inverse is the smallest)",
            show_default=str(RANDOM_D["anisotropy"]),
        ),
    ] = None,
    correlation: Annotated[
        float | None,
        typer.Option(
            help="correlation length of the random D field, in cells",
            show_default=str(RANDOM_D["correlation"]),
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="seed of the random length scales", show_default=str(RANDOM_D["seed"])),
    ] = None,
    resolution: Annotated[
        float | None,
        typer.Option(help="latlon: resolution in degrees", show_default=str(LATLON_RESOLUTION)),
    ] = None,
    polar_cap: Annotated[
        float | None, typer.Option(help="latlon: land poleward of ±this latitude")
    ] = None,
    mesh: Annotated[
        Path | None, typer.Option(help="mesh: a NEMO mesh_mask.nc or domain_cfg.nc")
    ] = None,
    north_fold: Annotated[
        str | None,
        typer.Option(help="mesh: none, T or F, overriding what the file says (or implies)"),
    ] = None,
    kappa: Annotated[
        Path | None,
        typer.Option(help="NetCDF with kappa11, kappa22 (m2) at T points, instead of random D"),
    ] = None,
    length_scales: Annotated[
        Path | None,
        typer.Option(help="NetCDF with D1, D2 (m) at T points, instead of random D"),
    ] = None,
    keep_halo: Annotated[
        bool,
        typer.Option(
            help="mesh: keep NEMO's 2-column cyclic halo (on a closed grid) instead of "
            "dropping it and wrapping east-west"
        ),
    ] = False,
) -> None:
    """Write a fields file for a built-in grid (or a NEMO mesh) with chosen length scales."""
    from diffnorm.fields import check_output_path, write_fields
    from diffnorm.grid import (
        built_in_grid,
        fields_from_cell_length_scales,
        fields_from_length_scales,
        fields_from_metrics,
    )
    from diffnorm.lengthscales import random_cell_length_scales
    from diffnorm.nemo import mesh_mask_grid, read_parameters

    random_d = {  # as typed (None: not typed)
        "d_min": d_min,
        "d_max": d_max,
        "anisotropy": anisotropy,
        "correlation": correlation,
        "seed": seed,
    }
    with user_errors():
        check_output_path(output)
        # an option that does not apply would be dropped silently: refuse it instead
        if kappa is not None and length_scales is not None:
            raise ValueError("give --kappa or --length-scales, not both")
        given = kappa or length_scales
        source = "--kappa" if kappa is not None else "--length-scales"
        if given is not None and constant is not None:
            raise ValueError(f"--constant sets D everywhere, {source} reads it: give one")
        typed = next(
            ("--" + k.replace("_", "-") for k, v in random_d.items() if v is not None), None
        )
        if typed and (given is not None or constant is not None):
            by = source if given is not None else "--constant"
            raise ValueError(f"{typed} shapes random length scales, which {by} replaces")
        if name is not GridName.mesh and (mesh is not None or keep_halo):
            raise ValueError(
                f"{'--mesh' if mesh is not None else '--keep-halo'} goes with grid 'mesh'"
            )
        if name is not GridName.latlon and (resolution is not None or polar_cap is not None):
            typed = "--resolution" if resolution is not None else "--polar-cap"
            raise ValueError(f"{typed} goes with grid 'latlon' ({name.value} has its own)")
        if polar_cap is not None and not 0 < polar_cap < 90:
            raise ValueError(f"--polar-cap is a latitude in (0, 90) degrees, got {polar_cap}")
        if correlation is not None and not correlation > 0:
            raise ValueError(f"--correlation must be > 0 cells, got {correlation}")
        d_min, d_max, anisotropy, correlation, seed = (
            RANDOM_D[k] if v is None else v for k, v in random_d.items()
        )
        if name is GridName.mesh:
            if mesh is None:
                raise ValueError(
                    "grid 'mesh' needs --mesh PATH to a NEMO mesh_mask.nc or domain_cfg.nc"
                )
            metrics = mesh_mask_grid(
                mesh, drop_halo=False if keep_halo else None, north_fold=north_fold
            )
        elif north_fold is not None:
            raise ValueError("--north-fold goes with grid 'mesh' (built-in grids know theirs)")
        else:
            kw = {}
            if name is GridName.latlon:
                kw = {"resolution": LATLON_RESOLUTION if resolution is None else resolution}
                kw["polar_cap"] = polar_cap
            metrics = built_in_grid(name.value, **kw)
        shape = metrics.mask.shape
        if given is not None:
            kind = "kappa" if kappa is not None else "length_scales"
            first, second = read_parameters(given, metrics, kind)
            build = fields_from_metrics if kind == "kappa" else fields_from_length_scales
            fields = build(metrics, first, second, steps)
            write_fields(output, fields, attrs={"grid": metrics.name, f"{kind}_file": str(given)})
            console.print(
                f"{metrics.name}: {shape[0]}×{shape[1]} cells, {fields.n_ocean} ocean, "
                f"M={steps}, parameters from {given}; wrote {output}"
            )
            return
        if constant is not None:
            if constant <= 0:
                raise ValueError(f"--constant must be > 0 cells, got {constant}")
            d1 = d2 = np.full(shape, constant)
            params = {"length_scale_cells": constant}
        else:
            if not 0 < d_min <= d_max:
                raise ValueError(f"need 0 < --d-min <= --d-max, got {d_min}, {d_max}")
            if anisotropy < 1:
                raise ValueError(f"--anisotropy is the largest ratio, >= 1; got {anisotropy}")
            d1, d2 = random_cell_length_scales(
                shape,
                np.random.default_rng(seed),
                d_min=d_min,
                d_max=d_max,
                anisotropy=(1 / anisotropy, anisotropy),
                correlation_cells=correlation,
                topology=metrics.topology,
            )
            params = {
                "d_min_cells": d_min,
                "d_max_cells": d_max,
                "anisotropy_max": anisotropy,
                "correlation_cells": correlation,
                "seed": seed,
            }
        fields = fields_from_cell_length_scales(metrics, d1, d2, steps)
        write_fields(output, fields, attrs={"grid": metrics.name, **params})
    console.print(
        f"{metrics.name}: {shape[0]}×{shape[1]} cells, {fields.n_ocean} ocean, M={steps}; "
        f"wrote {output}"
    )


@app.command()
def compare(
    input: Annotated[Path, typer.Argument(help="fields file (NetCDF)")],
    reference: Annotated[
        str, typer.Option(help="exact reference: selinv, probing or brute")
    ] = "selinv",
    methods: Annotated[
        str,
        typer.Option(
            help="comma-separated: analytic, lattice, images, walk, randomization:N, brute, "
            "probing, selinv, cnn, cnn:τ (the cnn with the cells it doubts above τ solved exactly)"
        ),
    ] = "analytic,randomization:100,randomization:1000,randomization:10000",
    tolerance: Annotated[float, typer.Option(help="reference tolerance (selinv, probing)")] = 1e-6,
    seed: Annotated[int, typer.Option(help="randomization seed")] = 0,
    out_dir: Annotated[
        Path, typer.Option("--out", help="folder for the table (md, csv) and PNG maps")
    ] = Path("compare_out"),
    backend: Annotated[Backend, typer.Option(help="linear algebra backend")] = Backend.sparse,
    plots: Annotated[bool, typer.Option(help="write PNG maps")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """All methods against an exact reference: mean |ε|, RMSE, Q99.99, max |ε|, wall time."""
    import warnings

    from diffnorm.compare import MethodFailedWarning, parse_method
    from diffnorm.compare import compare as run_compare
    from diffnorm.fields import check_output_folder, read_fields
    from diffnorm.metrics import relative_error
    from diffnorm.plots import plot_error_maps, plot_gamma

    with user_errors():
        check_output_folder(out_dir, f"--out {out_dir}")  # before the work
        specs = [parse_method(m) for m in methods.split(",") if m.strip()]
        fields, _ = read_fields(input)
        with progress_bars(not quiet) as bars, warnings.catch_warnings():
            warnings.simplefilter("ignore", MethodFailedWarning)  # said below, as errors
            result = run_compare(
                fields,
                specs,
                reference=reference,
                tolerance=tolerance,
                seed=seed,
                backend=backend.value,
                progress_for=bars,
            )
    table = result.markdown()
    out.print(table)
    for name, why in result.failed:  # first: whatever goes wrong below, these were said
        console.print(f"[bold red]error:[/] {name} failed: {why}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.md").write_text(table + "\n")
    result.write_csv(out_dir / "comparison.csv")
    result.write_distance_csv(out_dir / "error_by_distance.csv")
    written = ["comparison.md", "comparison.csv", "error_by_distance.csv"]
    if plots:
        plot_gamma(fields, result.reference.gamma, out_dir / "gamma.png", f"γ ({reference})")
        errors = {}
        for row in result.rows:
            eps = np.full(fields.shape, np.nan)
            eps[fields.mask] = relative_error(row.result.gamma, result.reference.gamma, fields.mask)
            errors[row.label] = eps
        written.append("gamma.png")
        if errors:  # every method may have failed
            plot_error_maps(fields, errors, out_dir / "errors.png", f"|ε| against {reference}")
            written.append("errors.png")
    console.print(f"wrote {', '.join(written)} in {out_dir}")
    if result.failed:
        raise typer.Exit(code=1)


@app.command()
def generate(
    config: Annotated[Path, typer.Option("--config", "-c", help="dataset config (YAML)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="dataset folder (created/resumed)")],
    workers: Annotated[
        int | None, typer.Option(help="local Dask workers (default: one per core; 1: no Dask)")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="address of a running Dask scheduler (many machines)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    time_limit: Annotated[
        float | None,
        typer.Option(
            help="seconds for the train split (val and test are made first, whole); "
            "then stop, keep what is made, exit 0"
        ),
    ] = None,
) -> None:
    """Generate (or resume) a dataset of samples with exact γ, one NetCDF file each."""
    from diffnorm.data import generate as run_generate
    from diffnorm.data import load_config
    from diffnorm.data.generate import DatasetError

    with user_errors():
        try:
            cfg = load_config(config)
            if workers is not None and workers < 1:
                raise ValueError(f"--workers must be >= 1, got {workers}")
            with progress_bars(not quiet) as bars:
                manifest = run_generate(
                    cfg,
                    out,
                    workers=workers,
                    scheduler=scheduler,
                    progress=bars("samples"),
                    time_limit=time_limit,
                )
        except DatasetError as exc:
            raise ValueError(str(exc)) from None
    made = sum(not r["reused"] for r in manifest["samples"])
    sizes = ", ".join(f"{k} {v}" for k, v in manifest["splits"].items())
    console.print(f"{out}: {sizes} ({made} made now, {len(manifest['samples']) - made} kept)")
    if not manifest["complete"] and time_limit is not None:
        console.print(f"stopped at --time-limit {time_limit:g} s; the same command completes it")


@app.command()
def inspect(
    root: Annotated[Path, typer.Argument(help="dataset folder made by `diffnorm generate`")],
    png: Annotated[
        Path | None, typer.Option(help="picture of a few samples (default ROOT/inspect.png)")
    ] = None,
    count: Annotated[int, typer.Option(help="samples in the picture")] = 3,
) -> None:
    """Split sizes, ranges of D, γ and γ²/γ²_analytic, and a PNG of a few samples."""
    from diffnorm.data.dataset import DatasetFolderError
    from diffnorm.data.summary import plot_samples, summarize

    if count < 1:
        usage_error(f"--count is the number of samples in the picture, >= 1; got {count}")
    with user_errors():
        try:
            summary = summarize(root)
            if not summary:
                raise ValueError(f"{root} holds no samples; `diffnorm generate` makes them")
            split = "train" if "train" in summary else next(iter(summary))
            picture = plot_samples(root, png or root / "inspect.png", count, split)
        except DatasetFolderError as exc:
            raise ValueError(str(exc)) from None
    out.print(
        "| split | samples | grid | D cells (min/med/max) | γ km (min/med/max) | "
        "γ²/γ²_analytic (min/med/max) |"
    )
    out.print("|---|---|---|---|---|---|")
    for split, s in summary.items():

        def fmt(v):
            return " / ".join(f"{x:.3g}" for x in v)

        out.print(
            f"| {split} | {s['samples']} | {s['shape'][0]}×{s['shape'][1]} | {fmt(s['D_cells'])} "
            f"| {fmt(s['gamma_km'])} | {fmt(s['gamma2_over_analytic'])} |"
        )
    console.print(f"wrote {picture}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def train(ctx: typer.Context) -> None:
    """Train a network (LightningCLI): `diffnorm train fit --config configs/train/….yaml`."""
    import warnings

    from diffnorm.data.dataset import DatasetFolderError
    from diffnorm.ml.train import TrainOptionError
    from diffnorm.ml.train import main as train_main

    args = list(ctx.args)
    for k, arg in enumerate(args):
        ckpt = arg.split("=", 1)[1] if arg.startswith("--ckpt_path=") else None
        if arg == "--ckpt_path" and k + 1 < len(args):
            ckpt = args[k + 1]
        if ckpt and ckpt not in ("last", "best", "null") and not Path(ckpt).exists():
            console.print(
                f"[bold red]error:[/] --ckpt_path {ckpt}: no such checkpoint; resume from a "
                "run's checkpoints/last.ckpt, or leave --ckpt_path out to start afresh"
            )
            raise typer.Exit(code=2)
    # sys.argv stays whole: DDP relaunches this very command line in each process
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
            train_main(args)
    except DatasetFolderError as exc:
        console.print(f"[bold red]error:[/] {exc} (--data.root)")
        raise typer.Exit(code=2) from None
    except TrainOptionError as exc:
        console.print(
            f"[bold red]error:[/] {exc} (an option in the config or on the command line; "
            "`diffnorm train fit --help` lists them)"
        )
        raise typer.Exit(code=2) from None


@app.command()
def evaluate(
    model: Annotated[
        str, typer.Option("--model", "-m", help="model file, checkpoint (.ckpt) or shipped name")
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help="dataset folder (several: comma-separated)")
    ],
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    samples: Annotated[
        str, typer.Option(help="randomization sample counts to compare with")
    ] = "100,1000,10000",
    seed: Annotated[int, typer.Option(help="randomization seed")] = 0,
    out_dir: Annotated[Path, typer.Option("--out", help="report folder")] = Path("eval_out"),
    device: Annotated[str, typer.Option(help="network device: cpu, cuda or auto")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """A trained network vs randomization and analytic on the same samples (eval mode)."""
    from diffnorm.fields import check_output_folder
    from diffnorm.ml.evaluate import evaluate as run_evaluate
    from diffnorm.ml.evaluate import markdown_table, strata_markdown

    with user_errors():
        check_output_folder(out_dir, f"--out {out_dir}")  # before the samples are scored
        try:
            counts = [int(float(n)) for n in samples.split(",") if n.strip()]
        except ValueError:
            usage_error(
                f"--samples wants comma-separated sample counts (e.g. 100,1000), got {samples!r}"
            )
        with progress_bars(not quiet) as bars:
            report = run_evaluate(
                model, data, split, counts, seed, out_dir, bars("samples"), device
            )
    out.print(markdown_table(report))
    out.print(strata_markdown(report))
    console.print(f"wrote evaluation.md, CSVs and PNGs in {out_dir}")


@app.command()
def predict(
    input: Annotated[Path, typer.Argument(help="fields file (NetCDF, DESIGN layout)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write fields + gamma")],
    model: Annotated[
        str | None,
        typer.Option(
            help="model file, checkpoint or shipped name (default: a shipped model trained "
            "on this grid, else windows-smooth-gpu2-m10, or the one for the grid's M; "
            "diffnorm models)"
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "auto",
    tile: Annotated[
        int | None, typer.Option(help="predict in N×N-cell tiles, each with its halo (memory)")
    ] = None,
    symmetries: Annotated[
        int,
        typer.Option(
            help="average over this many of the grid's flips and turns (up to 8 closed, "
            "4 periodic or folded)"
        ),
    ] = 1,
    precision: Annotated[
        str, typer.Option(help="float32, or bfloat16 (faster where the hardware has it)")
    ] = "float32",
    exact_basins: Annotated[
        int, typer.Option(help="basins of at most this many cells solved exactly (0: none)")
    ] = EXACT_BASINS,
    exact_fold_rows: Annotated[
        int, typer.Option(help="rows under a north fold solved exactly (0: none)")
    ] = EXACT_FOLD_ROWS,
    exact_above: Annotated[
        str | None,
        typer.Option(
            help="also solve exactly the cells whose error estimate is above this |ε| "
            "(auto: the model's calibrated τ)"
        ),
    ] = None,
    verify: Annotated[
        int,
        typer.Option(help="also compute exact γ at this many cells and report the error there"),
    ] = 0,
    seed: Annotated[int, typer.Option(help="--verify: random seed")] = 0,
    nemo_layout: Annotated[
        bool,
        typer.Option(
            "--nemo-layout",
            help="write γ, its error estimate and domain flags on the NEMO file's layout",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """γ from a trained network (same as `estimate --method cnn`)."""
    estimate(
        input,
        output,
        method=MethodName.cnn,
        model=model,
        device=device,
        tile=tile,
        symmetries=symmetries,
        precision=precision,
        exact_basins=exact_basins,
        exact_fold_rows=exact_fold_rows,
        exact_above=exact_above,
        verify=verify,
        seed=seed,
        nemo_layout=nemo_layout,
        quiet=quiet,
    )


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """List the pretrained models shipped with diffnorm and their measured errors."""
    from diffnorm.ml.modelfile import GammaNetwork, describe
    from diffnorm.models import DEFAULT, shipped_model_path, shipped_models

    cards = [describe(GammaNetwork.load(shipped_model_path(n))) for n in shipped_models()]
    if as_json:
        out.print(json.dumps(cards, default=str))
        return
    if not cards:
        out.print("no shipped models")
    for c in cards:
        star = " (default)" if c["name"] == DEFAULT else ""
        d = c["d_cells"] or (float("nan"), float("nan"))
        m = c["steps"]  # an M, or [smallest, largest] for a network with M as an input
        m = "{}–{}".format(*m) if isinstance(m, list) else m
        out.print(
            f"[bold]{c['name']}[/]{star}: {c['arch']}, {c['parameters']:,} parameters, "
            f"M={m}, target {c['target']}, trained on {c['trained_on']} "
            f"({c['train_samples']} samples), D {d[0]:.2g}–{d[1]:.2g} cells"
        )
        if c["fine_tuned_from"]:
            out.print(f"    fine-tuned from {c['fine_tuned_from']}")
        if c["note"]:
            out.print(f"    {c['note']}")
        for grid, m in (c["metrics"] or {}).items():
            out.print(
                f"    {grid}: mean abs(ε) {m['mean_abs']:.2e}, Q99.99 {m['q9999']:.2e}, "
                f"max {m['max_abs']:.2e} over {m['samples']} test samples"
            )


class ExportFormat(StrEnum):
    model = "model"
    torchscript = "torchscript"
    onnx = "onnx"


@app.command()
def export(
    model: Annotated[str, typer.Option("--model", "-m", help="checkpoint, model file or name")],
    output: Annotated[Path, typer.Option("-o", "--output", help="file to write")],
    format: Annotated[
        ExportFormat,
        typer.Option(help="model: diffnorm model file; torchscript (FTorch); onnx"),
    ] = ExportFormat.model,
    periodic_x: Annotated[
        bool | None,
        typer.Option(help="torchscript/onnx: grids that wrap east-west", show_default="periodic-x"),
    ] = None,
    north_fold: Annotated[
        str | None,
        typer.Option(
            help="torchscript/onnx: the grids' north fold: none, T or F", show_default="none"
        ),
    ] = None,
    graph: Annotated[
        str | None,
        typer.Option(
            help="torchscript/onnx: 'fields' (mask, area, alpha_x, alpha_y in, γ in m out) or "
            "'features' (raw feature channels in, the target out)",
            show_default="fields",
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="torchscript/onnx fields graph: the grids' M (needed for a model with M as an "
            "input: a graph serves one M)"
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="model: the model's name")] = None,
    note: Annotated[
        str | None, typer.Option(help="model: a line for the model card (how it was trained)")
    ] = None,
    gate: Annotated[
        str | None,
        typer.Option(
            help="model: A,B fades the network's correction out between A·D and B·D cells from "
            "the coast (D: the cell's length scale), leaving the open ocean to the baseline"
        ),
    ] = None,
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            help="model: LABEL=DIR/evaluation.json from `diffnorm evaluate`, stored in the "
            "model's card (repeatable)"
        ),
    ] = None,
    error_model: Annotated[
        Path | None,
        typer.Option(
            help="model: DIR/evaluation.json from `diffnorm evaluate` on held-out data (not the "
            "split the card reports): its per-cell |ε| quantiles become the model's error "
            "estimate (written as gamma_error_estimate by `estimate --method cnn`)"
        ),
    ] = None,
) -> None:
    """Write a self-contained model file, or a TorchScript/ONNX graph + JSON card."""
    from diffnorm.ml.modelfile import resolve_model

    with user_errors():
        # an option of the other format would be dropped silently: refuse it instead
        # the graph's options as typed (None: not typed; the exporter's own defaults apply)
        graph_given = {
            name: value
            for name, value in (
                ("periodic_x", periodic_x),
                ("north_fold", north_fold),
                ("graph", graph),
                ("steps", steps),
            )
            if value is not None
        }
        model_options = {
            "--name": name,
            "--note": note,
            "--gate": gate,
            "--metrics": metrics,
            "--error-model": error_model,
        }
        if format is ExportFormat.model:
            if graph_given:
                typed = "--" + next(iter(graph_given)).replace("_", "-")
                raise ValueError(
                    f"{typed} is for torchscript/onnx graphs, not model files: add "
                    "--format torchscript or --format onnx, or leave it out"
                )
        else:
            typed = next((k for k, v in model_options.items() if v is not None), None)
            if typed:
                raise ValueError(
                    f"{typed} is for model files (--format model), not graphs: export a model "
                    f"file with {typed} first, then the graph from that file"
                )
        if format is ExportFormat.model:
            from diffnorm.ml.evaluate import card_metrics, read_evaluation

            net = resolve_model(model)
            if name:
                net.name = name
            if note:
                net.created["note"] = note
            if gate:
                import dataclasses

                a, sep, b = gate.partition(",")
                if not sep or not 0 <= float(a) < float(b):
                    raise ValueError(f"--gate wants A,B with 0 <= A < B, got {gate!r}")
                net = dataclasses.replace(
                    net, encoding=dataclasses.replace(net.encoding, gate=(float(a), float(b)))
                )
            for item in metrics or []:
                label, sep, path = item.partition("=")
                if not sep:
                    raise ValueError(f"--metrics wants LABEL=PATH, got {item!r}")
                if not Path(path).is_file():
                    raise ValueError(f"--metrics {item}: no such file; {EVALUATION_HINT}")
                net.metrics[label] = card_metrics(path, f"--metrics {item}")
            if error_model is not None:
                if not Path(error_model).is_file():
                    raise ValueError(
                        f"--error-model {error_model}: no such file; {EVALUATION_HINT}"
                    )
                report = read_evaluation(error_model, "--error-model")
                if "error_model" not in report:
                    raise ValueError(
                        f"{error_model} holds no error model: run `diffnorm evaluate` again "
                        "with this diffnorm"
                    )
                net.error_model = report["error_model"]
            written = [net.save(output)]
        else:
            from diffnorm.ml.export import export as run_export
            from diffnorm.topology import parse_north_fold

            if north_fold is not None:
                graph_given["north_fold"] = parse_north_fold(north_fold)
            if graph_given.get("north_fold", "none") != "none" and periodic_x is False:
                raise ValueError("--north-fold needs --periodic-x (every ORCA grid is cyclic)")
            net = resolve_model(model)
            written = list(run_export(net, output, format.value, **graph_given))
    console.print(f"wrote {', '.join(map(str, written))}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("out/demo"),
    quick: Annotated[
        bool, typer.Option(help="a smaller grid and a short training (seconds: a smoke run)")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Dask workers for the data (default: one per core; 1 with --quick)"),
    ] = None,
) -> None:
    """The whole pipeline on a small grid: exact data, training, evaluation against
    randomization and analytic, a model file; tables and plots in --out."""
    from diffnorm.demo import run_demo

    with user_errors():
        with progress_bars() as bars:
            report = run_demo(out_dir, quick=quick, workers=workers, progress_for=bars)
    out.print(report["table"])
    console.print(f"results, plots and the trained model are in {out_dir.resolve()}")


@app.command("methods")
def list_methods(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """List the γ methods and their options."""
    from diffnorm.methods import METHODS, method_options

    rows = {
        name: {"summary": m.summary, "options": method_options(name)}
        for name, m in sorted(METHODS.items())
    }
    if as_json:
        out.print(json.dumps(rows, default=str))
        return
    for name, row in rows.items():
        opts = ", ".join(f"{k}={v}" for k, v in row["options"].items() if k != "block_size")
        out.print(f"[bold]{name}[/]: {row['summary']}" + (f"  ({opts})" if opts else ""))


if __name__ == "__main__":  # pragma: no cover
    app()
