"""Packaging of beatsqlalchemy; the Alembic migrations ship as beatsqlalchemy.migrations."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
#: the web console (``beatsqlalchemy[web]``)
WEB = ["starlette>=0.37", "jinja2>=3.1", "uvicorn>=0.29", "python-multipart>=0.0.9", "itsdangerous>=2.1"]

setup(
    name="beatsqlalchemy",
    version="1.0.0",
    description="A Celery beat scheduler that keeps periodic tasks and run state in a SQL database",
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=["beatsqlalchemy", "beatsqlalchemy.migrations", "beatsqlalchemy.migrations.versions",
              "beatsqlalchemy.web"],
    package_dir={"beatsqlalchemy.migrations": "migrations"},
    package_data={"beatsqlalchemy": ["py.typed"], "beatsqlalchemy.migrations": ["script.py.mako"],
                  # the web console's pages and assets: everything it serves ships in the wheel
                  "beatsqlalchemy.web": ["templates/*.html", "static/*"]},
    install_requires=[
        "celery>=5.3,<6",
        "sqlalchemy>=2.0,<3",
        "alembic>=1.12",
        "click>=8.1",
        "cron-descriptor>=1.4",
    ],
    extras_require={
        "postgresql": ["psycopg[binary]>=3.1"],
        "mysql": ["PyMySQL>=1.1"],
        "solar": ["ephem>=4.1"],
        "web": WEB,
        "metrics": ["prometheus-client>=0.17"],
        "test": [
            "pytest>=7.4",
            "pytest-mock>=3.12",
            "pytest-timeout>=2.2",
            "docutils>=0.20",
            "ephem>=4.1",
            "redis>=4.5",
            "psycopg[binary]>=3.1",
            "psycopg2-binary>=2.9",  # the change watch on the driver of a plain postgresql:// URL
            "PyMySQL>=1.1",
            "ruff>=0.5",
            "mypy>=1.10",
            "croniter>=2.0",  # an independent cron evaluator the DST tests compare against
            "hypothesis>=6.90",  # property and fuzz tests of the schedule math and validators
            *WEB,
            "playwright>=1.40",  # the web console's tests, driving Debian's Chromium (no download)
            "httpx>=0.25",  # Starlette's test client (the console mounted in a host application)
            "prometheus-client>=0.17",  # beat's metrics endpoint
        ],
    },
    entry_points={
        "console_scripts": ["beatsqlalchemy = beatsqlalchemy.cli:main"],
        "celery.beat_schedulers": [
            "beatsqlalchemy = beatsqlalchemy.schedulers:DatabaseScheduler",
        ],
        "celery.commands": ["beatsqlalchemy = beatsqlalchemy.cli:celery_command"],
    },
    classifiers=[
        "Framework :: Celery",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Distributed Computing",
    ],
)
