-- Lists group an organization's todos. Everyone in the organization reads them; owners and
-- admins manage them; a todo may only join a list of its own organization.

create table lists (
    id uuid primary key default gen_random_uuid(),
    org_id uuid not null default reactor.org_id(),
    name text not null check (length(name) between 1 and 100),
    created_at timestamptz not null default now()
);

alter table todos add column list_id uuid references lists (id);
create index todos_list_id_idx on todos (list_id);

alter table lists enable row level security;

create policy lists_select on lists for select to reactor_authenticated
    using (org_id = reactor.org_id());

create policy lists_insert on lists for insert to reactor_authenticated
    with check (org_id = reactor.org_id() and reactor.role() in ('owner', 'admin'));

create policy lists_update on lists for update to reactor_authenticated
    using (org_id = reactor.org_id() and reactor.role() in ('owner', 'admin'))
    with check (org_id = reactor.org_id());

create policy lists_delete on lists for delete to reactor_authenticated
    using (org_id = reactor.org_id() and reactor.role() in ('owner', 'admin'));

-- Restrictive: on top of the policies above, whatever they allow.
create policy todos_list_same_org on todos as restrictive for insert to reactor_authenticated
    with check (list_id is null
                or exists (select 1 from lists l where l.id = list_id and l.org_id = reactor.org_id()));
