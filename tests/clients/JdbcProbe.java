// A JDBC application through leasegate (MariaDB Connector/J, from Debian's libmariadb-java):
// server-side prepared statements, a batch, a transaction, and Statement.cancel(), which the
// driver implements by opening a second connection and sending KILL QUERY <connection id>.
// Run by tests/mysql_proxy.rs as `java -cp <driver jar> JdbcProbe.java <url>`.
import java.sql.*;

public class JdbcProbe {
  public static void main(String[] args) throws Exception {
    try (Connection c = DriverManager.getConnection(args[0])) {
      try (PreparedStatement p = c.prepareStatement("SELECT ?, CURRENT_USER()")) {
        p.setInt(1, 7);
        try (ResultSet r = p.executeQuery()) {
          r.next();
          System.out.println("prepared " + r.getInt(1) + " " + r.getString(2));
        }
      }
      c.setAutoCommit(false);
      try (PreparedStatement p = c.prepareStatement("UPDATE items SET name = ? WHERE id = ?")) {
        for (int i = 1; i <= 3; i++) { p.setString(1, "jdbc " + i); p.setInt(2, i); p.addBatch(); }
        System.out.println("batch " + p.executeBatch().length);
      }
      c.commit();
      c.setAutoCommit(true);
      try (Statement s = c.createStatement()) {
        Thread canceller = new Thread(() -> {
          try { Thread.sleep(700); s.cancel(); } catch (Exception e) { System.out.println("cancel failed " + e); }
        });
        canceller.start();
        long t = System.nanoTime();
        try (ResultSet r = s.executeQuery("SELECT SLEEP(20)")) {
          r.next();
          System.out.println("slept " + r.getInt(1) + " in " + (System.nanoTime() - t) / 1000000 + " ms");
        } catch (SQLException e) {
          System.out.println("cancelled " + e.getErrorCode() + " in " + (System.nanoTime() - t) / 1000000 + " ms");
        }
        canceller.join();
      }
      try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT name FROM items WHERE id = 3")) {
        r.next();
        System.out.println("after " + r.getString(1));
      }
    }
  }
}
