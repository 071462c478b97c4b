import logging
from contextlib import contextmanager

from flask import current_app

from alembic import context
from alembic.util import CommandError
from sqlalchemy.exc import OperationalError

from core.db import driver_reason

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# The application set up logging (JSON lines with a request id, or text: LOG_FORMAT) before Flask-Migrate ran this
# file; alembic's lines go through the same handler. (alembic.ini's own logging configuration replaced it, so the
# migrations of `flask db upgrade` were the only plain-text lines of a production deployment: found by an audit.)
logging.getLogger('alembic').setLevel(logging.INFO)
logger = logging.getLogger('alembic.env')


def get_engine():
    return current_app.extensions['migrate'].db.engine


def get_engine_url():
    try:
        return get_engine().url.render_as_string(hide_password=False).replace(
            '%', '%%')
    except AttributeError:
        return str(get_engine().url).replace('%', '%%')


# add your model's MetaData object here
# for 'autogenerate' support
# from myapp import mymodel
# target_metadata = mymodel.Base.metadata
config.set_main_option('sqlalchemy.url', get_engine_url())
target_db = current_app.extensions['migrate'].db

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.


def get_metadata():
    if hasattr(target_db, 'metadatas'):
        return target_db.metadatas[None]
    return target_db.metadata


def run_migrations_offline():
    """Run migrations in 'offline' mode.

    This configures the context with just a URL
    and not an Engine, though an Engine is acceptable
    here as well.  By skipping the Engine creation
    we don't even need a DBAPI to be available.

    Calls to context.execute() here emit the given string to the
    script output.

    """
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url, target_metadata=get_metadata(), literal_binds=True
    )

    with context.begin_transaction():
        context.run_migrations()


def render_item(type_, obj, autogen_context):
    """Render the project's UTCDateTime as a plain DateTime so migrations import nothing of the app."""
    if type_ == "type" and type(obj).__name__ == "UTCDateTime":
        return "sa.DateTime()"
    return False


@contextmanager
def _sqlite_foreign_keys_off(connection):
    """On SQLite, run the migrations with foreign keys off (the app turns them on for every connection).

    A batch operation that SQLite cannot do in place (a CHECK added, a column dropped) copies the table and drops
    the old one, and with foreign keys on, SQLite refuses to drop a table other rows refer to: ``DROP TABLE trades``
    fails as soon as one refund, rating or timeline entry exists, so an installation with any trade could not
    upgrade. The pragma is a no-op inside a transaction, so it is set here, on the driver's connection, before the
    migrations begin theirs; ``_refuse_broken_references`` checks every reference before each migration commits,
    and the connection goes back to the pool with foreign keys on again.
    """
    if connection.dialect.name != 'sqlite':
        yield
        return
    driver = connection.connection.driver_connection
    driver.execute('PRAGMA foreign_keys=OFF')
    try:
        yield
    finally:
        # Each migration committed its own transaction; with none to apply, alembic's reading of the version left one
        # open, in which the pragma did nothing, and the pool then served `flask dev` with foreign keys off (found by
        # an audit).
        if connection.in_transaction():
            connection.rollback()
        driver.execute('PRAGMA foreign_keys=ON')


def _refuse_broken_references(ctx, step, heads, run_args):
    """Fail (and so roll back) a migration that left a row referring to one that does not exist (SQLite only: on
    PostgreSQL the foreign keys stay on). Alembic calls this inside each migration's transaction."""
    if ctx.connection.dialect.name != 'sqlite':
        return
    broken = ctx.connection.exec_driver_sql('PRAGMA foreign_key_check').fetchall()
    if broken:
        raise RuntimeError(f'migration {step.up_revision_id if step.is_upgrade else step.down_revision_ids}: '
                           f'{len(broken)} rows refer to rows that do not exist (table, rowid, parent, fk): '
                           f'{broken[:5]}')


def run_migrations_online():
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    """

    # this callback is used to prevent an auto-migration from being generated
    # when there are no changes to the schema
    # reference: http://alembic.zzzcomputing.com/en/latest/cookbook.html
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, 'autogenerate', False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info('No changes in schema detected.')

    conf_args = current_app.extensions['migrate'].configure_args
    conf_args.setdefault("render_item", render_item)
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives

    connectable = get_engine()

    try:
        connection = connectable.connect()
    except OperationalError as exc:  # a typo in DATABASE_URL, a database not created yet, the server down
        reason = driver_reason(exc)
        # Flask-Migrate prints a CommandError as one 'Error: ...' line and exits 1 (anything else is a traceback).
        raise CommandError(f'the database cannot be reached: {reason}') from None

    with connection, _sqlite_foreign_keys_off(connection):
        context.configure(
            connection=connection,
            target_metadata=get_metadata(),
            on_version_apply=_refuse_broken_references,
            **conf_args
        )

        with context.begin_transaction():
            _one_upgrade_at_a_time(connection)
            context.run_migrations()


def _one_upgrade_at_a_time(connection):
    """On PostgreSQL, wait for any other process migrating this database to commit before reading its version.

    Two instances started at once (each running ``flask db upgrade`` before it serves, as the README's production
    section does) both read the version before either had committed, both ran the same migrations, and the second
    failed on the first one's objects with a traceback (``column ... already exists``), so its instance did not start
    (found by an audit). The lock is the transaction's: it is released when the migrations commit or roll back, and the
    second process then finds the database at head and has nothing to do. SQLite's file takes one writer at a time.
    """
    if connection.dialect.name == 'postgresql':
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('wallet: alembic migrations'))")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
