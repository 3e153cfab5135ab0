"""Plots of sweep Datasets (twa_jax._sweep_plot), on small Datasets built by hand: no simulation."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from twa_jax import _sweep_plot as sp  # noqa: E402

N = [2, 4]
SPACING = [0.1, 0.2, 0.3]
TIME = np.linspace(0.0, 1.0, 6)


def grid_ds(fail=True):
    """dims (N, spacing, time); R peaks at a known time; n has a mode dim of size 1; one point failed."""
    nN, nS = len(N), len(SPACING)
    tpk = 0.2 + 0.1 * np.arange(nN)[:, None] + 0.5 * np.asarray(SPACING)[None, :]  # (N, spacing)
    height = 1.0 + 0.5 * np.arange(nN)[:, None] - np.asarray(SPACING)[None, :]
    R = height[..., None] - 2.0 * (TIME[None, None, :] - tpk[..., None]) ** 2
    R_sem = 0.01 + 0.01 * TIME[None, None, :] + 0.001 * np.arange(nS)[None, :, None] + np.zeros((nN, 1, 1))
    n = 0.1 * R[..., None]
    n_avg = n.mean(2)
    failed = np.full((nN, nS), "", dtype=object)
    if fail:
        failed[1, 2] = "64 of 64 trajectories became non-finite"
        for a in (R, R_sem, n, n_avg):
            a[1, 2] = np.nan
    return xr.Dataset(
        {
            "R": (("N", "spacing", "time"), R),
            "R_sem": (("N", "spacing", "time"), R_sem),
            "n": (("N", "spacing", "time", "mode"), n),
            "n_sem": (("N", "spacing", "time", "mode"), 0.1 * R_sem[..., None]),
            "n_average": (("N", "spacing", "mode"), n_avg),
            "n_average_sem": (("N", "spacing", "mode"), np.full(n_avg.shape, 0.002)),
            "dt": (("N", "spacing"), np.full((nN, nS), 0.01)),
            "n_failed": (("N", "spacing"), np.where(failed == "", 0, -1)),
            "failed": (("N", "spacing"), failed.astype(str)),
        },
        coords={"N": N, "spacing": SPACING, "time": TIME},
        attrs={"model": "build", "n_traj": 64},
    ), tpk, height


def point_ds():
    """An explicit list of points: dim ``point`` with the axes as coordinates along it."""
    pts = [(0.5, 2), (1.0, 2), (0.5, 4), (1.0, 4), (2.0, 4)]
    g = np.array([p[0] for p in pts])
    k = np.array([p[1] for p in pts])
    y = g[:, None] * k[:, None] * (1 - np.exp(-TIME[None, :]))
    return xr.Dataset(
        {"y": (("point", "time"), y), "y_sem": (("point", "time"), np.full(y.shape, 0.05)),
         "failed": (("point",), np.array([""] * 5))},
        coords={"g": ("point", g), "k": ("point", k), "time": TIME},
    )


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def bands(ax):
    return [c for c in ax.collections if isinstance(c, matplotlib.collections.PolyCollection)]


def band_limits(coll):
    """``(x, lower, upper)`` of a fill_between band with no gaps."""
    v = coll.get_paths()[0].vertices
    # fill_between's path: start, the upper edge forward, the lower edge back (and closing points)
    xs = np.unique(v[:, 0])
    lo = np.array([v[v[:, 0] == x, 1].min() for x in xs])
    hi = np.array([v[v[:, 0] == x, 1].max() for x in xs])
    return xs, lo, hi


def test_errorbars_lines_labels_and_band_is_mean_pm_sem():
    ds, _, _ = grid_ds(fail=False)
    red = sp.reduce_time(ds, "R", "final")
    ax = sp.errorbars(red, "R", "spacing", hue="N")
    data = [ln for ln in ax.lines if ln.get_label() != "failed"]
    assert [ln.get_label() for ln in data] == ["N = 2", "N = 4"]
    assert len(bands(ax)) == 2
    for i, (ln, coll) in enumerate(zip(data, bands(ax))):
        np.testing.assert_allclose(ln.get_xdata(), SPACING)
        np.testing.assert_allclose(ln.get_ydata(), ds["R"].isel(N=i, time=-1))
        x, lo, hi = band_limits(coll)
        np.testing.assert_allclose(x, SPACING)
        m, s = ds["R"].isel(N=i, time=-1).values, ds["R_sem"].isel(N=i, time=-1).values
        np.testing.assert_allclose(lo, m - s)
        np.testing.assert_allclose(hi, m + s)
        assert coll.get_facecolor()[0][:3] == pytest.approx(matplotlib.colors.to_rgb(ln.get_color()))
    assert ax.get_xlabel() == "spacing" and ax.get_ylabel() == "R"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["N = 2", "N = 4"]


def test_errorbars_without_hue_and_as_bars():
    ds, _, _ = grid_ds(fail=False)
    ax = sp.errorbars(ds.sel(N=4), "n_average", "spacing", band=False)  # n_average_sem; mode (size 1) dropped
    assert len(ax.containers) == 1 and not bands(ax)
    cont = ax.containers[0]
    np.testing.assert_allclose(cont.lines[0].get_ydata(), ds["n_average"].sel(N=4, mode=0))
    segs = cont.lines[2][0].get_segments()  # the vertical bars: (x, m - s) to (x, m + s)
    lengths = [seg[1][1] - seg[0][1] for seg in segs]
    np.testing.assert_allclose(lengths, 2 * 0.002)
    assert ax.get_legend() is None


def test_errorbars_dataarray_pair_and_x_as_the_other_axis():
    ds, _, _ = grid_ds(fail=False)
    m = ds["R"].mean("time").rename("Rbar")
    s = ds["R_sem"].mean("time")
    fig, ax = plt.subplots()
    out = sp.errorbars(None, m, "N", hue="spacing", sem=s, ax=ax, marker="s")
    assert out is ax
    assert len(ax.lines) == 3 and len(bands(ax)) == 3
    assert ax.lines[0].get_marker() == "s"
    x, lo, hi = band_limits(bands(ax)[1])
    np.testing.assert_allclose(hi - lo, 2 * s.sel(spacing=0.2).values)
    assert ax.get_ylabel() == "Rbar"
    with pytest.raises(ValueError, match="sem="):
        sp.errorbars(None, m, "N")


def test_errorbars_marks_failed_points():
    ds, _, _ = grid_ds()
    red = sp.reduce_time(ds, "R", "max")
    ax = sp.errorbars(red, "R", "spacing", hue="N")
    marks = [ln for ln in ax.lines if ln.get_label() == "failed"]
    assert len(marks) == 1
    np.testing.assert_allclose(marks[0].get_xdata(), [0.3])
    assert marks[0].get_marker() == "x"
    assert marks[0].get_color() == [ln for ln in ax.lines if ln.get_label() == "N = 4"][0].get_color()
    assert "failed" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_errorbars_explicit_points():
    ds = point_ds()
    ax = sp.errorbars(ds.isel(time=-1), "y", "g", hue="k")
    labels = [ln.get_label() for ln in ax.lines]
    assert labels == ["k = 2", "k = 4"]
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [0.5, 1.0, 2.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), ds["y"].isel(time=-1).values[2:])


def test_errorbars_clear_errors():
    ds, _, _ = grid_ds()
    with pytest.raises(ValueError, match="'Rx' is not a variable.*'R'"):
        sp.errorbars(ds, "Rx", "spacing")
    with pytest.raises(ValueError, match=r"dims \['time'\].*reduce"):
        sp.errorbars(ds, "R", "spacing", hue="N")
    with pytest.raises(ValueError, match=r"dims \['N'\]"):
        sp.errorbars(ds.isel(time=0), "R", "spacing")
    with pytest.raises(ValueError, match="x='a' is not a coordinate"):
        sp.errorbars(ds.isel(time=0), "R", "a", hue="N")
    with pytest.raises(ValueError, match="hue='b' is not a coordinate"):
        sp.errorbars(ds.isel(time=0), "R", "spacing", hue="b")
    with pytest.raises(ValueError, match="no standard error 'dt_sem'"):
        sp.errorbars(ds, "dt", "spacing", hue="N")
    with pytest.raises(TypeError, match="Dataset"):
        sp.errorbars(ds["R"], "R", "spacing")


def test_reduce_time_max_final_mean():
    ds, _, _ = grid_ds()
    mx = sp.reduce_time(ds, "R", "max")
    i = ds["R"].fillna(-np.inf).argmax("time")
    np.testing.assert_allclose(mx["R"], ds["R"].max("time"))
    np.testing.assert_allclose(mx["R_sem"], ds["R_sem"].isel(time=i).where(ds["failed"] == ""))
    assert "time" not in mx.coords and (mx["failed"] == ds["failed"]).all()
    fin = sp.reduce_time(ds, "R", "final")
    np.testing.assert_allclose(fin["R_sem"], ds["R_sem"].isel(time=-1))
    mean = sp.reduce_time(ds, "R", "mean")
    np.testing.assert_allclose(mean["R"], ds["R"].mean("time"))
    np.testing.assert_allclose(mean["R_sem"], ds["R_sem"].mean("time"))
    with pytest.raises(ValueError, match="reduce must be one of"):
        sp.reduce_time(ds, "R", "median")
    with pytest.raises(ValueError, match="no time dimension"):
        sp.reduce_time(ds, "n_average", "max")


def test_peak_time_of_a_parabola():
    ds, tpk, height = grid_ds()
    pk = sp.peak(ds, "R")
    ok = (ds["failed"] == "").values
    # R is a parabola in t: the three-point vertex is exact wherever the maximum is inside the grid
    inner = ok & (tpk > TIME[0]) & (tpk < TIME[-1])
    np.testing.assert_allclose(pk["peak_time"].values[inner], tpk[inner], atol=1e-12)
    np.testing.assert_allclose(pk["peak"], ds["R"].max("time"))
    assert np.all(pk["peak_time_sem"].values[inner] > 0)
    assert np.isnan(pk["peak_time"].values[1, 2]) and np.isnan(pk["peak_sem"].values[1, 2])
    # the sem, by hand for one point: t* = t1 - 0.5 h (y2 - y0)/(y2 - 2 y1 + y0) on a uniform grid
    y = ds["R"].isel(N=0, spacing=0).values
    s = ds["R_sem"].isel(N=0, spacing=0).values
    j = int(np.argmax(y))
    h = TIME[1] - TIME[0]
    y0, y1, y2 = y[j - 1], y[j], y[j + 1]
    den = y2 - 2 * y1 + y0
    d0 = -0.5 * h * (-den - (y2 - y0)) / den**2
    d1 = -0.5 * h * (2 * (y2 - y0)) / den**2
    d2 = -0.5 * h * (den - (y2 - y0)) / den**2
    expect = np.sqrt((d0 * s[j - 1]) ** 2 + (d1 * s[j]) ** 2 + (d2 * s[j + 1]) ** 2)
    assert pk["peak_time_sem"].values[0, 0] == pytest.approx(expect, rel=1e-5)
    ax = sp.errorbars(pk, "peak_time", "spacing", hue="N")
    assert ax.get_ylabel() == "time of the peak of R"


def test_reductions_of_a_lazy_store_view_and_of_float32_data():
    """A store's view (``xr.open_zarr``) is lazy (dask): ``reduce_time(.., "max")`` and ``peak``
    indexed it with a lazy argmax and failed; they now equal the loaded Dataset's. A sweep's
    float32 means get the peak time's sem of their float64 copies (the central differences step by
    1e-6 of the value, 8 ulps of a float32: it differed by 0.7-1.7 %)."""
    pytest.importorskip("dask")
    ds, _, _ = grid_ds()
    lazy = ds.chunk({"N": 1})
    xr.testing.assert_allclose(sp.reduce_time(lazy, "R", "max").compute(), sp.reduce_time(ds, "R", "max"))
    xr.testing.assert_allclose(sp.peak(lazy, "R").compute(), sp.peak(ds, "R"))
    f32 = ds.assign(R=ds["R"].astype(np.float32), R_sem=ds["R_sem"].astype(np.float32))
    np.testing.assert_allclose(sp.peak(f32, "R")["peak_time_sem"], sp.peak(ds, "R")["peak_time_sem"], rtol=1e-4)


def test_peak_at_the_edge_has_no_sem():
    ds, _, _ = grid_ds(fail=False)
    dec = ds.assign(R=ds["R"] * 0 + np.exp(-ds["time"]))  # monotone: the maximum is at t = 0
    pk = sp.peak(dec, "R")
    np.testing.assert_allclose(pk["peak_time"], 0.0)
    assert np.isnan(pk["peak_time_sem"]).all()


def test_time_bands_every_point_and_selected():
    ds, _, _ = grid_ds()
    ax = sp.time_bands(ds, "R")
    assert len(ax.lines) == 5 and len(bands(ax)) == 5  # 6 points, one failed
    assert ax.lines[0].get_label() == "N=2, spacing=0.1"
    assert "1 failed point not shown" in ax.get_title()
    x, lo, hi = band_limits(bands(ax)[0])
    np.testing.assert_allclose(x, TIME)
    np.testing.assert_allclose(lo, (ds["R"] - ds["R_sem"]).isel(N=0, spacing=0))
    np.testing.assert_allclose(hi, (ds["R"] + ds["R_sem"]).isel(N=0, spacing=0))
    fig, ax = plt.subplots()
    sp.time_bands(ds, "n", ax=ax, N=4, spacing=[0.1, 0.2])
    assert [ln.get_label() for ln in ax.lines] == ["spacing=0.1", "spacing=0.2"]
    assert ax.get_title() == "N=4, mode=0"
    with pytest.raises(ValueError, match="no time dimension"):
        sp.time_bands(ds, "n_average")
    with pytest.raises(ValueError, match="cannot select Q"):
        sp.time_bands(ds, "R", Q=1)


def test_time_bands_explicit_points():
    ds = point_ds()
    ax = sp.time_bands(ds, "y", k=4)
    assert [ln.get_label() for ln in ax.lines] == ["g=0.5, k=4", "g=1, k=4", "g=2, k=4"]
    with pytest.raises(ValueError, match="no point has k = 3"):
        sp.time_bands(ds, "y", k=3)


@pytest.mark.parametrize("reduce", ["max", "final", "mean"])
def test_overview_panels_hue_and_failures(reduce):
    ds, _, _ = grid_ds()
    fig = sp.overview(ds, reduce=reduce)
    axs = [a for a in fig.axes if a.get_visible()]
    assert len(axs) == 3  # R, n (mode of size 1), n_average
    assert [a.get_xlabel() for a in axs] == ["N"] * 3  # the first axis
    ylabels = [a.get_ylabel() for a in axs]
    assert ylabels[2] == "n_average"
    assert ylabels[0] == {"max": "max R", "mean": "mean R", "final": "R(t = 1)"}[reduce]
    for a in axs:
        labels = [ln.get_label() for ln in a.lines]
        assert labels == ["spacing = 0.1", "spacing = 0.2", "spacing = 0.3", "failed"]
        np.testing.assert_allclose(a.lines[-1].get_xdata(), [4])
        assert len(bands(a)) == 3
    red = sp.reduce_time(ds, "R", reduce)
    np.testing.assert_allclose(axs[0].lines[0].get_ydata(), red["R"].sel(spacing=0.1))
    assert "1 failed point" in fig.get_suptitle()


def test_overview_x_and_errors():
    ds, _, _ = grid_ds()
    fig = sp.overview(ds, x="spacing")
    assert fig.axes[0].get_xlabel() == "spacing"
    assert [ln.get_label() for ln in fig.axes[0].lines] == ["N = 2", "N = 4", "failed"]
    fig = sp.overview(ds.sel(N=2))  # one axis left that varies
    assert len(fig.axes[0].lines) == 1 and fig.axes[0].get_xlabel() == "spacing"
    with pytest.raises(ValueError, match="reduce must be one of"):
        sp.overview(ds, reduce="min")
    with pytest.raises(ValueError, match="x='q' is not an axis"):
        sp.overview(ds, x="q")
    three = ds.expand_dims(c=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"axes \['c', 'N', 'spacing'\]; overview draws two.*ds.sel\(spacing=...\)"):
        sp.overview(three)
    many = ds.assign(s3=ds["R"].expand_dims(site=3, axis=-1), s3_sem=ds["R_sem"].expand_dims(site=3, axis=-1))
    with pytest.warns(UserWarning, match="leaves out.*s3"):
        sp.overview(many)


def test_overview_explicit_points():
    fig = sp.overview(point_ds())
    ax = fig.axes[0]
    assert ax.get_xlabel() == "g"
    assert [ln.get_label() for ln in ax.lines] == ["k = 2", "k = 4"]


def test_complex_observable_is_refused_not_cut_to_its_real_part():
    """A complex mean (``<a>`` of a boson) is refused by name by every plot and reduction, instead
    of being drawn as its real part; ``abs`` of it with the real ``_sem`` draws the modulus."""
    ds = point_ds()
    a = ds["y"] * np.exp(1j * 0.3)
    ds = ds.assign(a=a, a_sem=ds["y_sem"])
    red = ds.isel(time=-1)
    for call in (lambda: sp.errorbars(red, "a", "g"), lambda: sp.time_bands(ds, "a"),
                 lambda: sp.reduce_time(ds, "a", "max"), lambda: sp.peak(ds, "a")):
        with pytest.raises(ValueError, match="'a' is complex"):
            call()
    ax = sp.errorbars(red, abs(red["a"]), "g", hue="k", sem=red["a_sem"])
    ys = np.concatenate([line.get_ydata() for line in ax.lines])
    np.testing.assert_allclose(np.sort(ys), np.sort(np.abs(red["a"].values)))
    with pytest.warns(UserWarning, match=r"\['a'\].*complex"):
        fig = sp.overview(ds, x="g", hue="k")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1  # y only
    plt.close("all")
