"""The "addtask example" of the original beatsqlalchemy README, run as written."""

import json

from celery import Celery, current_app  # noqa: F401

app = Celery('celerybeat-sqlalchemy')
app.config_from_object('settings')
from beatsqlalchemy.models import PeriodicTask, get_session  # noqa: E402

session = get_session()
pt, _ = PeriodicTask.update_or_create(session_obj=session, name="tasks.boardcast_to", task="tasks.boardcast_to",  # noqa: E501
                                      defaults=dict(crontab=json.dumps({'minute': '*/1'}),
                                                    args='[1,3,4,"a"]',
                                                    kwargs='{"pp":"workd"}',
                                                    queue="noexist",
                                                    exchange=""))
session.add(pt)
session.flush()


pt, _ = PeriodicTask.update_or_create(session_obj=session, name="tasks.direct_to", task="tasks.direct_to",
                                      interval=json.dumps({'every': 30, 'period': 'seconds'}),
                                      defaults=dict(args='[1,2,3,4]', kwargs='{"hello":"world"}'))
session.add(pt)
session.flush()
print(pt.schedule)
