// A JDBC application through leasegate with PostgreSQL's driver (pgJDBC, from Debian's
// libpostgresql-jdbc-java): Statement.setQueryTimeout and Statement.cancel(), both of which the
// driver implements with a CancelRequest on a second connection, then the next statement on
// the same connection, which must not be the one cancelled.
// Run by tests/cancel.rs as `java -cp <driver jar> PgJdbcProbe.java <url>`.
import java.sql.*;

public class PgJdbcProbe {
  public static void main(String[] args) throws Exception {
    try (Connection c = DriverManager.getConnection(args[0]); Statement s = c.createStatement()) {
      s.setQueryTimeout(1);
      long t = System.nanoTime();
      try {
        s.executeQuery("SELECT pg_sleep(20)");
        System.out.println("timeout not applied");
      } catch (SQLException e) {
        System.out.println("timed out " + e.getSQLState() + " in " + (System.nanoTime() - t) / 1000000 + " ms");
      }
      s.setQueryTimeout(0);
      int next = 0;
      for (int i = 0; i < 50; i++) {
        // A cancel sent as the statement ends: the next statement must run untouched.
        Thread canceller = new Thread(() -> {
          try { Thread.sleep(5); s.cancel(); } catch (Exception e) { System.out.println("cancel failed " + e); }
        });
        canceller.start();
        try (ResultSet r = s.executeQuery("SELECT pg_sleep(0.005)")) { r.next(); } catch (SQLException e) { /* cancelled: fine */ }
        canceller.join();
        try (ResultSet r = s.executeQuery("SELECT 1 FROM pg_sleep(0.01)")) { r.next(); next += r.getInt(1); }
        catch (SQLException e) { System.out.println("next statement failed " + e.getSQLState()); }
      }
      System.out.println("next statements ok " + next);
    }
  }
}
