"""Checks that a stage output (a directory of part-*.parquet files) has the named columns, that
none of their values is null, and that the numeric ones are finite. Usage:
    check_columns.py DIR COLUMN [COLUMN ...]
Exits non-zero with a message naming the first problem."""
import glob
import math
import sys

import pyarrow.parquet as pq


def main() -> None:
    directory, columns = sys.argv[1], sys.argv[2:]
    parts = sorted(glob.glob(f"{directory}/part-*.parquet"))
    if not parts:
        sys.exit(f"{directory}: no part files")
    table = pq.read_table(parts[0]) if len(parts) == 1 else None
    if table is None:
        import pyarrow as pa

        table = pa.concat_tables(pq.read_table(p) for p in parts)
    for column in columns:
        if column not in table.column_names:
            sys.exit(f"{directory}: column {column} is missing (have {table.column_names})")
        values = table.column(column).to_pylist()
        for row, value in enumerate(values):
            if value is None:
                sys.exit(f"{directory}: {column} row {row} is null")
            if isinstance(value, float) and not math.isfinite(value):
                sys.exit(f"{directory}: {column} row {row} is {value}")
    print(f"{table.num_rows} rows, columns ok")


if __name__ == "__main__":
    main()
