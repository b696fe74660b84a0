"""django-cas-server for the end-to-end tests (tests/src/cas_server.rs runs it).

Settings come from the environment: PORT (loopback), CAS_DIR (its own folder:
the SQLite file lives there). One user, alice, with the attributes mail, cn
and groups (dba, staff); two service patterns: the sidecar's callbacks on
loopback (every attribute released, single logout on) and another service
(https://other.example.org/), whose tickets the sidecar must refuse.
"""

import os
import secrets

import django
from django.conf import settings

PORT = int(os.environ["PORT"])
FOLDER = os.environ["CAS_DIR"]

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    SECRET_KEY=secrets.token_hex(32),
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
        "cas_server",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(FOLDER, "cas.sqlite3"),
        }
    },
    STATIC_URL="/static/",
    USE_TZ=True,
    CAS_AUTH_CLASS="cas_server.auth.TestAuthUser",
    CAS_TEST_USER="alice",
    CAS_TEST_PASSWORD="alice-password",
    CAS_TEST_ATTRIBUTES={
        "mail": "alice@example.org",
        "cn": "Alice Liddell",
        "groups": ["dba", "staff"],
    },
    # No network here: never ask PyPI for a newer version.
    CAS_NEW_VERSION_HTML_WARNING=False,
    CAS_NEW_VERSION_EMAIL_WARNING=False,
    CAS_SHOW_POWERED=False,
    CAS_SLO_TIMEOUT=5,
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.urls import include, path  # noqa: E402

urlpatterns = [path("cas/", include("cas_server.urls", namespace="cas_server"))]

call_command("migrate", verbosity=0, interactive=False)

from cas_server.models import ReplaceAttributName, ServicePattern  # noqa: E402

if not ServicePattern.objects.exists():
    ours = ServicePattern.objects.create(
        pos=0,
        name="pg_integration sidecar",
        pattern=r"^http://127\.0\.0\.1:[0-9]+/auth/[A-Za-z0-9_.-]+/callback(\?.*)?$",
        single_log_out=True,
    )
    ReplaceAttributName.objects.create(name="*", service_pattern=ours)
    ServicePattern.objects.create(
        pos=1, name="another service", pattern=r"^https://other\.example\.org/"
    )

call_command("runserver", f"127.0.0.1:{PORT}", use_reloader=False, use_threading=True)
