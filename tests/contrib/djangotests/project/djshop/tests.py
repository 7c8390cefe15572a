"""Run by ``manage.py test`` (Django's own test runner) from tests/contrib/djangotests."""

import uuid

from django.db import transaction
from django.test import TransactionTestCase

from jobrunner.contrib.django import enqueue_on_commit, get_runner


class EnqueueTests(TransactionTestCase):
    def test_job_written_in_the_test_database(self) -> None:
        tenant = uuid.uuid4()
        with transaction.atomic():
            handle = enqueue_on_commit("djshop-ping", {}, tenant=tenant)
        info = get_runner().get_job_status(handle.job_id, tenant=tenant)
        assert info is not None
        assert info.name == "djshop-ping"
