//! Room for the features' own state in the shared core: each feature keeps a value of a type of its
//! own here, so a new feature adds a file, not a field to the core.

use std::any::{Any, TypeId};
use std::collections::HashMap;

/// One value per type, made with `Default` when first asked for.
#[derive(Default)]
pub(crate) struct Extensions {
    values: HashMap<TypeId, Box<dyn Any>>,
}

impl Extensions {
    /// The value of type `T`, made if missing.
    pub(crate) fn get<T: Default + 'static>(&mut self) -> &mut T {
        self.values
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut()
            .expect("stored under its own TypeId")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_type() {
        #[derive(Default)]
        struct Count(u32);
        let mut e = Extensions::default();
        e.get::<Count>().0 += 2;
        e.get::<Count>().0 += 1;
        assert_eq!(e.get::<Count>().0, 3);
        assert_eq!(*e.get::<String>(), "");
    }
}
