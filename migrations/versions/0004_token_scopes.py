"""token scopes: api_tokens.scope

A token is read, write or admin (service.models.TokenScope). Every token stored before this revision could write
(they came from DELTAMU_API_TOKENS, or `deltamu up`'s generated token): they get `write`.

The downgrade refuses while a token has another scope: revision 0003 lets every token write, so keeping a read
token would let it write, and an admin token would come back as a write token.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 13:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

api_tokens = sa.table('api_tokens', sa.column('id', sa.Integer), sa.column('name', sa.String),
                      sa.column('scope', sa.String))


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.Enum('read', 'write', 'admin', name='tokenscope_check',
                                                       native_enum=False, create_constraint=True, length=16),
                                      nullable=True))
    op.get_bind().execute(api_tokens.update().values(scope='write'))
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.alter_column('scope', existing_type=sa.String(length=16), nullable=False)


def downgrade() -> None:
    others = op.get_bind().execute(sa.select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.scope)
                                   .where(api_tokens.c.scope != 'write').order_by(api_tokens.c.id)).all()
    if others:
        named = ", ".join(f"{token_id} ({name}, {scope})" for token_id, name, scope in others[:10])
        raise RuntimeError(f"refusing to downgrade 0004: {len(others)} token(s) are not write tokens ({named}); "
                           "revision 0003 would let each of them write. Delete those rows from api_tokens first "
                           "(a revoked row is no help: delete it), or restore a backup taken at 0003.")
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_api_tokens_tokenscope_check'), type_='check')   # SQLite's copy would keep it
        batch_op.drop_column('scope')
