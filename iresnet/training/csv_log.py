"""A CSV logger whose file always has every column its rows use, whatever order keys come in.

Lightning's CSV writer remembers the columns it has written and rewrites the file's header when
new keys appear, reading the rows back under the old header and writing them under the keys it
remembers. When the file holds columns the writer does not remember (a run resumed in its own
directory, whose log so far was written by an earlier process, or joined back by
:func:`iresnet.cli.rundir.join_log`), that rewrite fails with ``dict contains fields not in
fieldnames``. Here the header is always the union of the file's own columns, the columns
written so far and the new rows' keys, so no order of first-logged keys can make a row unwritable.
"""

from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _UnionHeaderWriter(ExperimentWriter):
    """Lightning's writer, with the header taken as the union of the file's and the rows' keys."""

    def save(self) -> None:
        if not self.metrics:
            return
        on_disk = self._header_on_disk()
        new = {key for row in self.metrics for key in row} | set(self.metrics_keys)
        # The file's columns keep their places (its rows stay aligned); new keys go after them.
        keys = on_disk + sorted(new - set(on_disk))
        if on_disk and keys != on_disk:
            self._rewrite_with_new_header(keys)
        with self._fs.open(self.metrics_file_path, mode="a" if on_disk else "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            if not on_disk:
                writer.writeheader()
            writer.writerows(self.metrics)
        self.metrics_keys = keys
        self.metrics = []

    def _header_on_disk(self) -> list[str]:
        if not self._fs.isfile(self.metrics_file_path):
            return []
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            return next(csv.reader(file), [])


class ResumableCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` (same arguments) whose rows never fail to be
    written: a key first logged after others, after a resume, or present only in the file already
    on disk widens the header instead of raising."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _UnionHeaderWriter(log_dir=self.log_dir)
        return self._experiment
