package com.layered.sources;

/** Reads orders from the database. */
public final class Orders {
    public static String find(long id) {
        return "order " + id;
    }
}
