"""Puts the three role models (text-to-image, text-to-speech, image-captioning) into the BentoML model store.

`python -m models import --profile tiny|full`: `tiny` builds random weights offline (`models.tiny`), `full`
downloads the real ones (`models.full`); `models.__main__` labels and stores them.
"""
