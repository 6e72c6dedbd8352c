"""`BudgetMeter`: the value of every quantity a budget limits, for one student config.

MACs, parameters, peak memory and weight bytes are exact from the config alone (`analytic_cost`,
`nas_kd.memory`); latency is *predicted* by the machine's `LatencyTable` and only *measured*
(`nas_kd.latency.measure_latency`, ~0.3 s) where the prediction is too close to the limit to
trust: at or above `MEASURE_ABOVE` of it. A prediction below that is taken as it is; one above the
limit is rejected without measuring. A search's winner is always measured (`nas_kd.finalize`).

The table's prediction can be off by a factor for the students a search actually proposes (on
this machine it under-predicted 1-ms students by ~1.4x: docs/COST.md), and every measurement the
search takes says by how much. So a study corrects its predictions with its own measurements
(`latency_correction`): the table's prediction in rulers is multiplied by the median ratio of
measured to table-predicted latency, both in rulers (so the machine's speed at each measurement
does not enter), over the study's measured trials (every worker's, resumes included), once
`MIN_MEASURED` exist. Each trial records the table's own prediction (`table_latency_rulers`)
beside the corrected one, so corrections never compound.

A latency limit is judged at the slowest speed the machine has shown (`slowest_ruler_ms`). This
VM switches between two speeds about 1.6x apart within minutes (docs/COST.md); a student measured
at 0.87 ms in a fast period measured 1.59 ms at the end of the same search. A limit checked at
whatever speed the moment has is met or missed by chance. So a latency in ms, predicted or
measured, is its latency in rulers times the slowest ruler time seen: the table's own ruler
timing and every measurement's in the study (each measurement times the ruler alternately with
the student), a measurement never below the student's time measured alone (`judged_ms`); one
judged over the limit is taken again and the lower kept (`BudgetMeter.measure_for_limit`). The
limit then holds whenever the machine runs at a speed it has shown, and is conservative by the
ratio of the two speeds when it runs fast; the report gives both the figure at the slowest speed
and the one measured at the end.
"""

from __future__ import annotations

from nas_kd.config import Budget, get_precision
from nas_kd.models.student import StudentConfig

__all__ = ["BudgetMeter", "MEASURE_ABOVE", "MIN_MEASURED", "TABLE_LATENCY_ATTR", "latency_correction", "slowest_ruler_ms", "judged_ms", "fill_of", "describe_values"]

MEASURE_ABOVE = 0.8  # of the latency limit: predictions from here up to the limit are measured
MIN_MEASURED = 2  # measured trials before a study corrects the table's latency predictions
TABLE_LATENCY_ATTR = "table_latency_rulers"  # a trial's latency as the table alone predicted it, in rulers


def latency_correction(trials) -> float:
    """The factor a study's measurements put on the table's predictions (module docstring): the
    median of measured / table-predicted latency, both in rulers, over ``trials`` that have both;
    1.0 with fewer than `MIN_MEASURED`."""
    import statistics

    ratios = [t.user_attrs["latency_rulers"] / t.user_attrs[TABLE_LATENCY_ATTR] for t in trials if t.user_attrs.get("latency_rulers") and t.user_attrs.get(TABLE_LATENCY_ATTR)]
    return statistics.median(ratios) if len(ratios) >= MIN_MEASURED else 1.0


def slowest_ruler_ms(trials, *more: float | None) -> float | None:
    """The slowest ruler time among ``trials``' measurements and predictions (``latency_ruler_ms``,
    ``slowest_ruler_ms``) and ``more`` (module docstring); None when there is none."""
    seen = [t.user_attrs.get(key) for t in trials for key in ("latency_ruler_ms", "slowest_ruler_ms")] + list(more)
    seen = [float(v) for v in seen if v]
    return max(seen) if seen else None


def judged_ms(median_ms: float, rulers: float | None, slowest: float | None) -> float:
    """A measurement in ms as a limit judges it (module docstring): its rulers at the slowest ruler
    time seen, never below its time measured alone (the ruler is timed after the student, and the
    machine may have been slower still while it ran alone); as measured without rulers."""
    return max(float(median_ms), float(rulers) * slowest) if rulers and slowest else float(median_ms)


def fill_of(budget: Budget, macs: float, params: float, **values: float) -> float:
    """Cost over the binding limit (the largest ratio over every limit): > 1 is over budget."""
    return max(budget.ratios(macs, params, **values).values())


def describe_values(budget: Budget, values: dict[str, float]) -> str:
    """MACs, params and the other limited quantities of ``values``, with units:
    '250.86k MACs, 4.05k params, 75.26kB peak memory'."""
    from nas_kd.config import format_quantity

    names = {"macs": "MACs", "params": "params", "memory": "peak memory", "size": "size", "latency": "latency"}
    shown = ["macs", "params"] + [q for q in budget.limits() if q not in ("macs", "params")]
    return ", ".join(f"{format_quantity(q, values[q])} {names[q]}" for q in shown)


class BudgetMeter:
    def __init__(self, budget: Budget, input_shape, num_classes: int, space=None, table=None):
        self.budget, self.shape, self.num_classes = budget, tuple(int(v) for v in input_shape), int(num_classes)
        self.space = space  # the search space, whose calibration line the latency table applies
        self.precision = get_precision(budget.precision)
        self._table = table
        self.correction = 1.0  # on the table's latency predictions (`latency_correction`)
        self.slowest_ruler_ms: float | None = None  # the speed latency limits are judged at (module docstring)

    def correct_from(self, trials) -> None:
        """Take the correction of latency predictions and the slowest ruler time from a study's
        measured ``trials`` (and the table's own ruler timing)."""
        if self.budget.latency is not None:
            self.correction = latency_correction(trials)
            self.slowest_ruler_ms = slowest_ruler_ms(trials, self.slowest_ruler_ms, self.table.ruler_ms)

    def slowest_ms(self) -> float:
        """The slowest ruler time this meter has seen (the table's, at least)."""
        if self.slowest_ruler_ms is None:
            self.slowest_ruler_ms = self.table.ruler_ms
        return self.slowest_ruler_ms

    @property
    def table(self):
        """The machine's latency table, opened on first use (only latency budgets need it)."""
        if self._table is None:
            from nas_kd.latency import LatencyTable

            self._table = LatencyTable()
        return self._table

    def values(self, cfg: StudentConfig) -> dict[str, float]:
        """{quantity: value}: MACs, parameters and every other limited quantity; latency is the
        table's corrected prediction in ms at the slowest speed seen."""
        from nas_kd.cost import analytic_cost
        from nas_kd.memory import peak_memory_bytes, size_bytes

        cost = analytic_cost(cfg, self.shape, self.num_classes)
        values: dict[str, float] = {"macs": cost.macs, "params": cost.params}
        if self.budget.memory is not None:
            values["memory"] = peak_memory_bytes(cfg, self.shape, self.num_classes, self.precision)
        if self.budget.size is not None:
            values["size"] = size_bytes(cfg, self.shape, self.num_classes, self.precision)
        if self.budget.latency is not None:
            values["latency"] = self.correction * self.table_rulers(cfg) * self.slowest_ms()
        return values

    def table_rulers(self, cfg: StudentConfig) -> float:
        """The latency table's own prediction in rulers, before the study's correction."""
        return self.table.predict_rulers(cfg, self.shape, self.num_classes, space=self.space)

    def at_slowest(self, latency) -> float:
        """A measured `Latency` as the limit judges it (`judged_ms`), its own moment's ruler
        time included in the slowest seen."""
        self.slowest_ruler_ms = max(self.slowest_ms(), latency.ruler_ms)
        return self._judged(latency)

    def deployment_bytes(self, cfg: StudentConfig) -> tuple[int, int]:
        """(peak activation bytes, weight bytes) at the budget's precision, exact."""
        from nas_kd.memory import peak_memory_bytes, size_bytes

        return peak_memory_bytes(cfg, self.shape, self.num_classes, self.precision), size_bytes(cfg, self.shape, self.num_classes, self.precision)

    def fill(self, cfg: StudentConfig) -> float:
        return fill_of(self.budget, **self.values(cfg))

    def needs_measuring(self, predicted_latency: float) -> bool:
        """Whether a latency prediction is too close to the limit to decide on."""
        limit = self.budget.latency
        return limit is not None and MEASURE_ABOVE * limit <= predicted_latency <= limit

    def measure_latency(self, cfg: StudentConfig):
        from nas_kd.latency import measure_latency

        return measure_latency(cfg, self.shape, self.num_classes, threads=self.table.threads)

    def measure_for_limit(self, cfg: StudentConfig):
        """(measured `Latency`, ms as the limit judges it) of ``cfg``: a measurement over the limit
        is taken again and the lower kept, its ruler time entering the slowest seen. Interference
        on a shared CPU only ever adds time, and one disturbed measurement would reject a student
        for good (CI's 2-core box measured a 0.024-ms student at 0.056 ms alternated with the
        ruler, whose own time was unchanged: 3x what the same run had just measured for it)."""
        kept = self.measure_latency(cfg)
        if self._judged(kept) > self.budget.latency:
            kept = min(kept, self.measure_latency(cfg), key=self._judged)
        return kept, self.at_slowest(kept)

    def _judged(self, latency) -> float:
        """`at_slowest` without recording the measurement's ruler time."""
        return judged_ms(latency.median_ms, latency.rulers, max(self.slowest_ms(), latency.ruler_ms))

    def footprint(self, cfg: StudentConfig) -> dict:
        """Everything a report shows for one student: fvcore's MACs and parameters, peak memory
        and weight bytes at the budget's precision, and the latency *measured* now."""
        from nas_kd.cost import measure

        cost = measure(cfg, self.shape, self.num_classes)
        latency = self.measure_latency(cfg)
        memory, size = self.deployment_bytes(cfg)
        return {
            "macs": cost.macs,
            "params": cost.params,
            "precision": self.precision.name,
            "memory_bytes": memory,
            "size_bytes": size,
            "latency_ms": latency.median_ms,
            "latency": latency.to_dict(),
            # what the limit is judged on (module docstring); latency budgets only
            **({"latency_slowest_ms": self.at_slowest(latency), "slowest_ruler_ms": self.slowest_ms()} if self.budget.latency is not None else {}),
        }


def admits_largest(meter: BudgetMeter, space) -> str | None:
    """'budget ... admits the largest member of SPACE (its values): it does not bind' when the
    space's largest member (every choice at its maximum, so the most of every quantity) fits the
    meter's budget, else None. Such a budget constrains nothing: a search trains the largest
    students, the slowest, which is rarely what a user who named a limit meant."""
    values = meter.values(space.largest())
    if not meter.budget.fits(**values):
        return None
    return f"budget {meter.budget.describe()} admits the largest member of {space.name} ({describe_values(meter.budget, values)}): it does not bind"
