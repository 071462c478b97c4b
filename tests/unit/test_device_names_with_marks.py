"""A device name in a script that writes vowels as combining marks (Devanagari, Thai, Tamil, Arabic harakat) kept its
letters and lost the marks, each turned into a space: "राम का फ़ोन" read "र म क फ न" in the owner's new-device alert
(an item the last note left). The marks are kept; a number spelled with marks between its digits is still masked."""

import unicodedata

import pytest

from notifications.templates import plain_words, render


@pytest.mark.parametrize("name", ["राम का फ़ोन", "สมศักดิ์ มือถือ", "தமிழ் கைபேசி", "هاتفُ علي", "Nguyễn's phone"])
def test_a_name_written_with_combining_marks_is_shown_whole(name):
    assert plain_words(name, 40) == unicodedata.normalize("NFKC", name)


def test_the_new_device_alert_shows_it():
    text = render("new_device_login", "en", {"device": "राम का फ़ोन", "time": "2026-12-07 12:00 (UTC+8)"})
    assert unicodedata.normalize("NFKC", "राम का फ़ोन") in text


@pytest.mark.parametrize("name", ["1\u09403\u09408\u09400\u09400\u09401\u09403\u09408\u09400\u09400\u09400",
                                  "138\u0301 0013\u0301 8000"])
def test_digits_parted_by_marks_are_still_a_number(name):
    shown = plain_words(name, 40)
    assert "****" in shown and "0013" not in shown, shown
