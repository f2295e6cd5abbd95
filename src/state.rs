//! Scoped state: immutable values attached to a scope by type, read by the scope's code, its
//! tasks and its nested scopes ([`Scope::with_state`](crate::Scope::with_state),
//! [`ctx::state`](crate::ctx::state)).
//!
//! Invariants:
//! - Each scope holds one `Arc<StateMap>`: its parent's values overridden by its own. A scope
//!   that attaches nothing shares its parent's map (no copy); one that attaches values copies
//!   the parent's map once, at entry. The parent's map is never modified.
//! - Values are immutable once attached; reading is a hash lookup with no lock.
//! - Isolation is about events only: isolated scopes inherit state like any other.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::table::TypeIdHasher;

type Value = Arc<dyn Any + Send + Sync>;

/// The values visible in one scope.
#[derive(Clone, Default)]
pub(crate) struct StateMap {
    values: HashMap<TypeId, Value, BuildHasherDefault<TypeIdHasher>>,
}

impl StateMap {
    /// The state of a scope whose parent has `parent` and which attaches `own`.
    pub(crate) fn inherit(parent: Option<&Arc<StateMap>>, own: Vec<(TypeId, Value)>) -> Arc<Self> {
        match (parent, own.is_empty()) {
            (Some(parent), true) => parent.clone(),
            (parent, _) => {
                let mut map = parent.map(|p| StateMap::clone(p)).unwrap_or_default();
                map.values.extend(own);
                Arc::new(map)
            }
        }
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let value = self.values.get(&TypeId::of::<T>())?.clone();
        Some(
            value
                .downcast::<T>()
                .expect("state is keyed by the TypeId of its value"),
        )
    }
}

/// Why [`ctx::try_state`](crate::ctx::try_state) found no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateError {
    /// No scope is current.
    NoScope,
    /// Neither the current scope nor any enclosing scope attached a value of this type.
    Missing {
        /// `std::any::type_name` of the requested type.
        type_name: &'static str,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::NoScope => f.write_str(
                "no scopebus scope is current; wrap the code in `ctx::scope(..).run(..)` or start it with `ctx::spawn`",
            ),
            StateError::Missing { type_name } => write!(
                f,
                "no state of type `{type_name}` in the current scope or any enclosing scope; \
                 attach one with `ctx::scope(..).with_state(value)`"
            ),
        }
    }
}

impl std::error::Error for StateError {}
