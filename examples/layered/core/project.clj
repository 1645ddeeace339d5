;; The core layer: the endpoints. shipit bumps only the version below.
(defproject com.layered/core "2.0.1"
  :description "Order endpoints"
  :dependencies [[org.clojure/clojure "1.11.1"]
                 [com.layered/protocols "1.2.0"]])
