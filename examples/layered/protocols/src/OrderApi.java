package com.layered.protocols;

/** What core may ask of the sources. */
public interface OrderApi {
    String find(long id);
}
