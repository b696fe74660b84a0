//! External databases as foreign tables, one wrapper per engine on
//! supabase-wrappers (`postgres`: PostgreSQL and compatible engines). The
//! shared parts: option lists and the planner facts/EXPLAIN hook.

pub mod options;
pub mod planner;
pub mod postgres;
