"""The rows of the table and of the JSON."""
from .util import median, paired_ratio


class Report:
    """Rows of the table (and of the JSON), the raw runs behind them, and section errors."""

    def __init__(self):
        self.rows = []
        self.runs = {}
        self.errors = {}
        self.seconds = {}

    def add(self, section, name, runs=None, *, rate=None, cpu=None, hwm=None, value=None, value_text="",
            target="", passed=None, notes=""):
        if runs:
            rate = rate if rate is not None else median(r.get("rate") for r in runs)
            cpu = cpu if cpu is not None else median(r.get("cpu_per_100k") for r in runs)
            hwms = [r.get("hwm_mib") for r in runs if r.get("hwm_mib")]
            hwm = hwm if hwm is not None else (max(hwms) if hwms else None)
        row = {"section": section, "name": name, "rate": rate, "cpu_per_100k": cpu, "peak_rss_mib": hwm,
               "value": value, "value_text": value_text, "target": target, "passed": passed, "notes": notes}
        if runs:
            row["rates"] = [r.get("rate") for r in runs]
            rates = [r for r in row["rates"] if r]
            if len(rates) > 1 and rate:
                spread = f"rounds {min(rates):,.0f}-{max(rates):,.0f}"
                row["notes"] = f"{spread}; {notes}" if notes else spread
        self.rows.append(row)
        return row

    def ratio_row(self, section, name, runs, baseline, baseline_name, minimum=None, notes=""):
        ratio = paired_ratio([r["rate"] for r in runs], [b["rate"] for b in baseline])
        passed = None if minimum is None or ratio is None else ratio >= minimum
        row = self.add(section, name, runs, value=ratio, value_text=f"{ratio:.2f}x {baseline_name}" if ratio else "",
                       target=f">= {minimum:.2f}x" if minimum is not None else "", passed=passed, notes=notes)
        row["ratios"] = [a["rate"] / b["rate"] for a, b in zip(runs, baseline) if a.get("rate") and b.get("rate")]
        return row

    def cpu_row(self, section, name, runs, baseline, baseline_name, maximum):
        ratio = paired_ratio([r["cpu_per_100k"] for r in runs], [b["cpu_per_100k"] for b in baseline])
        cpu = median(r["cpu_per_100k"] for r in runs)
        self.add(section, name, cpu=cpu, value=ratio,
                        value_text=f"{ratio:.2f}x {baseline_name}" if ratio else "", target=f"<= {maximum:.2f}x",
                        passed=None if ratio is None else ratio <= maximum,
                        notes=f"{baseline_name} {median(b['cpu_per_100k'] for b in baseline):.2f} CPU s/100k")
        self.rows[-1]["ratios"] = [a["cpu_per_100k"] / b["cpu_per_100k"] for a, b in zip(runs, baseline)
                                   if a.get("cpu_per_100k") and b.get("cpu_per_100k")]
        return self.rows[-1]

    def table(self):
        header = ["name", "msgs/s", "CPU s/100k", "RSS MiB", "ratio / value", "target", "result", "notes"]
        body = []
        for row in self.rows:
            body.append([
                row["name"], f"{row['rate']:,.0f}" if row["rate"] else "",
                f"{row['cpu_per_100k']:.2f}" if row["cpu_per_100k"] is not None else "",
                f"{row['peak_rss_mib']:.1f}" if row["peak_rss_mib"] else "", row["value_text"], row["target"],
                {True: "PASS", False: "FAIL", None: ""}[row["passed"]], row["notes"]])
        widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
        right = {1, 2, 3}
        def line(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        out = [line(header), "  ".join("-" * w for w in widths)]
        section = None
        for row, cells in zip(self.rows, body):
            if row["section"] != section and section is not None:
                out.append("")
            section = row["section"]
            out.append(line(cells).rstrip())
        for name, error in self.errors.items():
            out.append(f"section {name} FAILED: {error.splitlines()[0] if error else ''}")
        return "\n".join(out)
