"""``dropout-lab study report NAME``: compute a study's analysis from the store and write its report."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from dropout_lab.config.study_spec import StudySpec
from dropout_lab.errors import StudySpecError
from dropout_lab.reports.analyses import ANALYSES
from dropout_lab.reports.figures import closing_new_figures, report_theme
from dropout_lab.reports.inputs import load_study_data
from dropout_lab.reports.plan_section import plan_section
from dropout_lab.reports.writer import REPORTS_DIR, write_index, write_report


def build_report(spec: StudySpec, study: optuna.Study, reports_dir: Path = REPORTS_DIR,
                 storage: str | BaseStorage | None = None) -> Path:
    """Analyse the study's stored runs and write ``reports_dir/NAME/`` (README.md, answer.json, ...) and the index;
    a study with a declared plan is answered by the plan's verdicts, its kind's analysis shown as exploratory.

    ``storage`` is the study's store (a URL or storage), where ``tuned_from`` studies find their tuning studies.
    """
    if spec.analysis not in ANALYSES:
        raise StudySpecError(f"analysis={spec.analysis!r} is invalid: allowed one of {', '.join(sorted(ANALYSES))}")
    data = load_study_data(spec, study, storage)
    with closing_new_figures():
        with report_theme():
            report = ANALYSES[spec.analysis](data)
            plan = plan_section(data)  # None without a declared plan: then the report is the analysis alone
        tidy = {"curves": data.curves, **data.instruments}
        path = write_report(spec, data.all_runs, report, Path(reports_dir) / spec.name, tidy, plan)
    write_index(Path(reports_dir))
    return path
