"""A JSON log line is one line for every reader: Python's ``splitlines`` (and log shippers written in JavaScript or
Go that follow Unicode) also break lines at U+0085, U+2028 and U+2029, which ``json.dumps(ensure_ascii=False)``
writes as they are. A client that put one in a request path or a device name split the line in two, the second half
not JSON (an item the last note left)."""

import json
import logging

import pytest

from core.observability import JsonFormatter


@pytest.mark.parametrize("separator", ["\u0085", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r"])
def test_a_json_log_line_stays_one_line_whatever_separator_the_message_holds(separator):
    message = f"GET /api/v1/trades/x{separator}{{\"level\": \"CRITICAL\"}} 404"
    record = logging.LogRecord("wallet.access", logging.INFO, __file__, 1, message, (), None)
    out = JsonFormatter().format(record)
    assert len(out.splitlines()) == 1, out
    assert json.loads(out)["msg"] == message


def test_other_text_is_written_as_it_is():
    record = logging.LogRecord("wallet", logging.INFO, __file__, 1, "支付宝 café", (), None)
    assert "支付宝 café" in JsonFormatter().format(record)


@pytest.mark.parametrize("separator", ["\u0085", "\u2028", "\u2029", "\x9b"])
def test_a_text_log_line_stays_one_line_too(separator):
    from core.observability import TextFormatter

    message = f"GET /x{separator}INFO forged 200"
    record = logging.LogRecord("wallet.access", logging.INFO, __file__, 1, message, (), None)
    out = TextFormatter("%(levelname)s %(message)s").format(record)
    assert len(out.splitlines()) == 1 and separator not in out, out
