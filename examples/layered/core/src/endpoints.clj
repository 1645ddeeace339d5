(ns layered.core.endpoints)

(defn order [id] {:id id})
