"""CSV downloads that are safe to open in a spreadsheet.

Excel, LibreOffice and Google Sheets run a cell that starts with =, +, -, @ (and, after some
importers strip it, a leading tab or carriage return) as a formula: a label note "=HYPERLINK(...)"
in cases.csv would be a live link, or worse, on the lead's machine. Every CSV this project writes
goes through csv_response, which passes each cell through csv_safe: such a string gets a leading
single quote (OWASP's "CSV injection" advice), shown as text and dropped by spreadsheets on entry.
Only strings are touched: a number stays a number, so -0.25 is still a number in the file.
"""

import csv

from django.http import StreamingHttpResponse

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A cell as written to CSV: a string a spreadsheet would run as a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class _Echo:
    def write(self, value):
        return value


def csv_lines(header: list, rows):
    """The CSV text of a header and rows, line by line, every cell through csv_safe."""
    writer = csv.writer(_Echo())
    yield writer.writerow([csv_safe(cell) for cell in header])
    for row in rows:
        yield writer.writerow([csv_safe(cell) for cell in row])


def csv_response(filename: str, header: list, rows) -> StreamingHttpResponse:
    """A streamed CSV attachment (rows may be a generator over a queryset's iterator)."""
    response = StreamingHttpResponse(csv_lines(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def import_report(job) -> StreamingHttpResponse:
    """Every rejected line of an import job (line, field, message), streamed; page and API serve it."""
    rows = job.issues.order_by("line", "id").values_list("line", "field", "message").iterator(2000)
    return csv_response(f"import-{job.pk}-report.csv", ["line", "field", "message"], rows)
