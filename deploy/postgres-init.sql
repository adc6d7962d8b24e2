-- First start of the Postgres container: the two databases, the application role (never
-- BYPASSRLS), pgvector, and data access for the role on what migrations create.
CREATE DATABASE flowpilot;
CREATE DATABASE flowpilot_dagster;
CREATE ROLE flowpilot_app LOGIN PASSWORD 'flowpilot_app' NOSUPERUSER NOBYPASSRLS;
\connect flowpilot
CREATE EXTENSION IF NOT EXISTS vector;
GRANT USAGE ON SCHEMA public TO flowpilot_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO flowpilot_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO flowpilot_app;
