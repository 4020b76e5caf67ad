"""how a trial ran: trials.backend, trials.trainer, trials.cuda_graphs

What the worker's settings chose for a trial (the gated delta rule's backend, a lone trial or a pack, CUDA graphs)
changes its timing and its last bits, so each result records it (gdn.spec.TrialResult). Trials finished before
this revision have none: the columns are nullable.

The downgrade refuses while a trial has recorded how it ran: it would drop that record, and upgrading again could
not bring it back (down then up must give the same rows).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 13:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('backend', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('trainer', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('cuda_graphs', sa.Boolean(), nullable=True))


trials = sa.table('trials', sa.column('job_id', sa.String), sa.column('backend', sa.String),
                  sa.column('trainer', sa.String), sa.column('cuda_graphs', sa.Boolean))


def downgrade() -> None:
    recorded = sa.or_(trials.c.backend.is_not(None), trials.c.trainer.is_not(None), trials.c.cuda_graphs.is_not(None))
    jobs = op.get_bind().execute(sa.select(trials.c.job_id).where(recorded).distinct().order_by(trials.c.job_id)
                                 ).scalars().all()
    if jobs:
        raise RuntimeError(f"refusing to downgrade 0003: the trials of {len(jobs)} job(s) ({', '.join(jobs[:10])}) "
                           "record how they ran (backend, trainer, cuda_graphs), which revision 0002 cannot hold. "
                           "Delete those jobs first, or restore a backup taken at 0002.")
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_column('cuda_graphs')
        batch_op.drop_column('trainer')
        batch_op.drop_column('backend')
