-- A multi-tenant table: every row belongs to one organization and one author.
-- Row-level security keeps organizations apart; the reactor.*() helpers read the caller
-- that Reactor resolved for the request (user, active organization, role in it).

create table todos (
    id uuid primary key default gen_random_uuid(),
    org_id uuid not null default reactor.org_id(),
    user_id uuid not null default reactor.user_id(),
    title text not null check (length(title) between 1 and 500),
    done boolean not null default false,
    created_at timestamptz not null default now()
);

create index todos_org_id_idx on todos (org_id);

alter table todos enable row level security;

-- Members see their organization's todos, and only those.
create policy todos_select on todos for select to reactor_authenticated
    using (org_id = reactor.org_id());

-- Members add todos to their organization, as themselves.
create policy todos_insert on todos for insert to reactor_authenticated
    with check (org_id = reactor.org_id() and user_id = reactor.user_id());

-- Authors edit their own todos, without moving them to another organization.
create policy todos_update on todos for update to reactor_authenticated
    using (org_id = reactor.org_id() and user_id = reactor.user_id())
    with check (org_id = reactor.org_id() and user_id = reactor.user_id());

-- Authors, and the organization's owners and admins, delete.
create policy todos_delete on todos for delete to reactor_authenticated
    using (org_id = reactor.org_id() and (user_id = reactor.user_id() or reactor.role() in ('owner', 'admin')));
