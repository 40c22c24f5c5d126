"""Reading and writing a run folder's files, on a local disk or in a bucket: bytes, text and
Parquet tables, each write whole or not at all.

``RunFiles`` is the part of ``leuktune.runfolder.RunFolder`` that touches the files; the folder
gives it ``fs`` (its pyarrow filesystem), ``path``, ``file(name)`` and ``local``. Tests inject
storage failures here (``RunFolder.write_table``), at this one boundary.
"""

from __future__ import annotations

import io
import os
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class RunFiles:
    """The files of a run folder by their names relative to it (``leuktune.runfolder.layout``)."""

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.file(name)).type != pafs.FileType.NotFound

    def makedirs(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Whole or not at all: a local file is written aside and renamed over the old one; an
        object store replaces an object in one request."""
        target = self.file(name)
        if not self.local:  # a bucket has no folders to make (pyarrow would add marker objects above the run)
            with self.fs.open_output_stream(target) as out:
                out.write(data)
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{os.path.dirname(target)}/.{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, target)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.file(name)) as f:
            return f.read()

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def write_table(self, name: str, table: pa.Table | pd.DataFrame) -> None:
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.write_bytes(name, sink.getvalue())

    def read_table(self, name: str, schema: pa.Schema | None = None) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(name)), schema=schema)

    def read_frame(self, name: str) -> pd.DataFrame:
        return self.read_table(name).to_pandas()

    def remove(self, name: str) -> None:
        if self.exists(name):
            self.fs.delete_file(self.file(name))

    def listdir(self, fs_path: str) -> list[str]:
        """Names in a folder of this storage (fs path); none if it is not there."""
        infos = self.fs.get_file_info(pafs.FileSelector(fs_path, allow_not_found=True))
        return sorted(info.base_name for info in infos)
